import { Command } from "@commander-js/extra-typings";
import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { formatSizeBytes } from "../util/size.js";
import { describeGroup, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";

/** Write all of `data` to `file` or not at all: a temp file beside it, then a rename. */
async function writeWhole(file: string, data: Buffer | string): Promise<void> {
  const tmp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${randomBytes(4).toString("hex")}.tmp`,
  );
  try {
    await fsp.writeFile(tmp, data, { mode: 0o644 });
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
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
      deps.out.stdout.write(`${r.dir}\n`);
      deps.out.stderr.write(
        `imported ${r.files} files (${formatSizeBytes(r.bytes)} streamed) into ${r.vm}:${r.dir}; 'banger vm workspace export ${r.vm}' gets the changes back\n`,
      );
    });

  workspace
    .command("export")
    .description("Print the guest workspace's changes as a binary-safe patch")
    .argument("<vm>", "a running VM with a prepared workspace")
    .option("--name-only", "list the changed paths only, one per line")
    .option("-o, --output <file>", "write to this file instead of stdout")
    .action(async (vm: string, opts: { nameOnly?: boolean; output?: string }) => {
      const r = await withDaemon(deps, (c) =>
        c.call("vm.workspace.export", { name: vm, nameOnly: opts.nameOnly === true }),
      );
      const data: Buffer | string = opts.nameOnly
        ? (r.names ?? []).map((n) => `${n}\n`).join("")
        : Buffer.from(r.patch ?? "", "base64");
      if (opts.output) {
        await writeWhole(path.resolve(opts.output), data);
        if (!opts.nameOnly)
          deps.out.stderr.write(
            data.length === 0
              ? `no changes in ${vm}:${r.dir}; wrote an empty ${opts.output}\n`
              : `wrote ${opts.output}: 'git apply ${opts.output}' in your checkout applies it\n`,
          );
      } else {
        deps.out.stdout.write(data);
      }
    });

  return workspace as unknown as Command;
}
