import type { ProgressReport } from "../api/methods.js";
import { formatSizeBytes } from "../util/size.js";
import { visible } from "../util/terminal-text.js";
import type { Out } from "./output.js";

/**
 * Renders daemon progress on a TTY (one live line, finished stages kept above it);
 * prints nothing when stderr is not a terminal, so piped output stays clean.
 */
export function createProgressRenderer(out: Out): {
  report(r: ProgressReport): void;
  done(): void;
} {
  const tty = out.stderr.isTTY === true;
  let stage: string | null = null;
  let live = false;
  const clear = () => {
    if (live) out.stderr.write("\r\x1b[2K");
    live = false;
  };
  return {
    report(r) {
      if (!tty) return;
      if (stage !== null && visible(r.stage) !== stage) {
        clear();
        out.stderr.write(`  ✓ ${stage}\n`);
      }
      // What a stage names (an image, a registry's words) is shown, never obeyed by the terminal.
      stage = visible(r.stage);
      clear();
      let line = `  … ${stage}`;
      if (r.message) line += `: ${visible(r.message)}`;
      if (r.total && r.current !== undefined) {
        const fraction = Math.min(1, r.current / r.total);
        const filled = Math.round(fraction * 20);
        line += ` [${"#".repeat(filled)}${"-".repeat(20 - filled)}] ${formatSizeBytes(r.current)} / ${formatSizeBytes(r.total)} (${Math.floor(fraction * 100)}%)`;
      } else if (r.current !== undefined) {
        line += ` ${formatSizeBytes(r.current)}`;
      }
      // A terminal of unknown size (a pty nobody sized, a serial console) reports 0 columns.
      const columns = (out.stderr as { columns?: number }).columns || 100;
      out.stderr.write(line.slice(0, columns - 1));
      live = true;
    },
    done() {
      if (!tty) return;
      clear();
      if (stage !== null) out.stderr.write(`  ✓ ${stage}\n`);
      stage = null;
    },
  };
}
