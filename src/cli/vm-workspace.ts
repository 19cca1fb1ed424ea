import { Command } from "@commander-js/extra-typings";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { endpointSshArgs } from "../guest/ssh.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { workspaceExportArgs, workspaceRemoteCommand } from "../guest/workspace.js";
import { formatSizeBytes } from "../util/size.js";
import { visible } from "../util/terminal-text.js";
import { describeGroup, ExitStatus, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";
import { streamExport } from "./workspace-export.js";

/** A temp file beside `file` that becomes `file` only once the export succeeded. */
function tempBeside(file: string): string {
  return path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(4).toString("hex")}.tmp`,
  );
}

function closeStream(stream: fs.WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    stream.once("error", reject);
    stream.end(() => resolve());
  });
}

/** `banger vm workspace`: a git repo into a VM, and the guest's changes back as a patch. */
export function workspaceCommand(deps: CliDeps): Command {
  const workspace = describeGroup(new Command("workspace"), {
    purpose:
      "Move a git repo into a VM (tracked and untracked files, not ignored ones, plus .git) and get the guest's changes back as a patch.",
    examples: [
      "banger vm workspace prepare dev ./repo              # -> /root/repo in the VM",
      "banger vm ssh dev -- sh -c 'cd /root/repo && make test'",
      "banger vm workspace export dev -o changes.patch",
      "banger vm workspace prepare dev ./repo --from v1.2 --branch fix",
    ],
    next: "'git apply changes.patch' in the checkout you imported; 'banger vm workspace export <vm> --name-only' lists what changed.",
  });

  workspace
    .command("prepare")
    .description("Import a git repo into /root/<repo-name> in the VM (replaces an earlier import)")
    .argument("<vm>", "a running VM")
    .argument("<path>", "a directory inside the git checkout to import")
    .option("--branch <name>", "create and check out this branch in the guest")
    .option("--from <ref>", "import this commit (checked out, detached) instead of the work tree")
    .action(async (vm: string, repoPath: string, opts: { branch?: string; from?: string }) => {
      const progress = createProgressRenderer(deps.out);
      const r = await withDaemon(deps, (c) =>
        c.call(
          "vm.workspace.prepare",
          {
            name: vm,
            path: path.resolve(repoPath),
            ...(opts.branch !== undefined ? { branch: opts.branch } : {}),
            ...(opts.from !== undefined ? { from: opts.from } : {}),
          },
          { onProgress: progress.report },
        ),
      ).finally(() => progress.done());
      deps.out.stdout.write(`${visible(r.dir)}\n`);
      const back =
        r.base === null
          ? "the guest has no git, so 'banger vm workspace export' will not work in this VM (use an image with git for that)"
          : `'banger vm workspace export ${r.vm}' gets the changes back`;
      deps.out.stderr.write(
        `imported ${r.files} files (${formatSizeBytes(r.bytes)} streamed) into ${r.vm}:${visible(r.dir)}; ${back}\n`,
      );
    });

  workspace
    .command("export")
    .description("Print the guest workspace's changes as a binary-safe patch")
    .argument("<vm>", "a running VM with a prepared workspace")
    .option("--name-only", "list the changed paths only, one per line")
    .option("-o, --output <file>", "write to this file instead of stdout")
    .action(async (vm: string, opts: { nameOnly?: boolean; output?: string }) => {
      const nameOnly = opts.nameOnly === true;
      const endpoint = await withDaemon(deps, (c) => c.call("vm.ssh", { name: vm }));
      const file = opts.output === undefined ? null : path.resolve(opts.output);
      const tmp = file ? tempBeside(file) : null;
      const sink = tmp ? fs.createWriteStream(tmp, { mode: 0o644 }) : deps.out.stdout;
      // Ctrl-C stops ssh and removes the temp file; nothing half-written is left behind.
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      let r: { dir: string; bytes: number };
      try {
        r = await streamExport({
          vm,
          sshArgs: endpointSshArgs(vm, endpoint, ["-o", "BatchMode=yes"]),
          command: workspaceRemoteCommand(
            loadGuestScripts().workspace,
            workspaceExportArgs({ nameOnly }),
          ),
          nameOnly,
          out: sink,
          signal: abort.signal,
        });
        if (tmp && file && sink instanceof fs.WriteStream) {
          await closeStream(sink);
          await fsp.rename(tmp, file);
        }
      } catch (err) {
        if (tmp && sink instanceof fs.WriteStream) {
          sink.destroy();
          await fsp.rm(tmp, { force: true });
        }
        if (abort.signal.aborted) throw new ExitStatus(130);
        throw err;
      } finally {
        process.removeListener("SIGINT", onSignal);
        process.removeListener("SIGTERM", onSignal);
      }
      if (opts.output && !nameOnly)
        deps.out.stderr.write(
          r.bytes === 0
            ? `no changes in ${vm}:${visible(r.dir)}; wrote an empty ${opts.output}\n`
            : `wrote ${opts.output}: 'git apply ${opts.output}' in your checkout applies it\n`,
        );
    });

  return workspace as unknown as Command;
}
