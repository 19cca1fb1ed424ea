import path from "node:path";
import { PassThrough } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ResultOf } from "../api/methods.js";
import { GuestShell, type GuestStreamOptions, type GuestStreamResult } from "../guest/shell.js";
import type { GuestTarget } from "../guest/ssh.js";
import { loadGuestScripts, type GuestScripts } from "../guest/scripts.js";
import {
  COMMIT_MARKER,
  COMMIT_MEMBER,
  exportError,
  guestStderrTail,
  noGitError,
  GuestStatus,
  workspaceExportArgs,
  workspaceImportArgs,
  workspaceRemoteCommand,
} from "../guest/workspace.js";
import type { Progress } from "../image/service.js";
import type { CommandRunner } from "../system/runner.js";
import { planWorkspace } from "../workspace/plan.js";
import { checkBranchName, findRepo, resolveCommit } from "../workspace/repo.js";
import { commitTrailer, gnuTarSource, type TarSourceFactory } from "../workspace/stream.js";
import type { VmService } from "../vm/service.js";

/** Runs one command in the guest over SSH (GuestShell.stream; tests script it). */
export type GuestExec = (
  target: GuestTarget,
  command: string,
  opts: GuestStreamOptions,
) => Promise<GuestStreamResult>;

export interface WorkspaceServiceDeps {
  /** The VM side: a running VM's SSH target, and the per-VM lock for guest work. */
  vms: Pick<VmService, "guestTarget" | "exclusive">;
  /** Host git, and the guest's ssh (GuestShell). */
  runner: CommandRunner;
  /** Produces the tar stream of a plan; tests stall it. */
  tarSource?: TarSourceFactory;
  guestExec?: GuestExec;
  /** Bound on one import's guest I/O. */
  prepareTimeoutMs?: number;
  exportTimeoutMs?: number;
  /** guest-scripts/workspace.sh; read once, at construction, when not given. */
  scripts?: Pick<GuestScripts, "workspace">;
}

export interface PrepareRequest {
  name: string;
  path: string;
  branch?: string | undefined;
  from?: string | undefined;
}

/**
 * The most patch the daemon hands back in one `vm.workspace.export` answer. The CLI never asks
 * the daemon for a patch: it streams it from the guest over its own SSH connection, whatever
 * its size (src/cli/vm-workspace.ts).
 */
export const EXPORT_RPC_MAX_BYTES = 64 * 1024 * 1024;

/**
 * `vm workspace prepare|export`. The VM's lifecycle lock is held only while
 * guestTarget validates and snapshots the SSH target; all guest I/O runs under
 * the VM's "workspace" lock, so stop/delete/restart never wait behind an import
 * and two imports into one VM never interleave.
 */
export class WorkspaceService {
  private readonly tarSource: TarSourceFactory;
  private readonly guestExec: GuestExec;
  private readonly script: string;

  constructor(private readonly deps: WorkspaceServiceDeps) {
    this.tarSource = deps.tarSource ?? gnuTarSource;
    const shell = new GuestShell(deps.runner);
    this.guestExec =
      deps.guestExec ?? ((target, command, opts) => shell.stream(target, command, opts));
    this.script = (deps.scripts ?? loadGuestScripts()).workspace;
  }

  /**
   * The VM's SSH target once this call's turn has come: while it queued behind another
   * import the VM may have restarted (new port) or been replaced under the same name.
   */
  private async currentTarget(name: string, vmId: string): Promise<GuestTarget> {
    const target = await this.deps.vms.guestTarget(name);
    if (target.vmId !== vmId)
      throw new BangerError(
        ErrorCode.InvalidState,
        `VM ${name} was deleted and created again while this request waited`,
        "run the command again",
      );
    return target;
  }

  async prepare(
    req: PrepareRequest,
    progress: Progress = () => {},
    signal: AbortSignal = new AbortController().signal,
  ): Promise<ResultOf<"vm.workspace.prepare">> {
    if (!path.isAbsolute(req.path))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `the workspace path must be absolute, got "${req.path}"`,
        "the CLI resolves it for you: 'banger vm workspace prepare <vm> ./repo'",
      );
    // Everything about the host side is checked before the guest is touched.
    const { runner } = this.deps;
    const repo = await findRepo(runner, req.path);
    if (req.branch !== undefined) await checkBranchName(runner, repo.top, req.branch);
    const from =
      req.from !== undefined ? await resolveCommit(runner, repo.top, req.from) : undefined;
    const queued = await this.deps.vms.guestTarget(req.name);

    return this.deps.vms.exclusive("workspace", queued.vmId, async () => {
      const target = await this.currentTarget(req.name, queued.vmId);
      if (signal.aborted) throw new BangerError(ErrorCode.Cancelled, "cancelled");
      progress({ stage: "list", message: repo.top });
      // Listed under the lock, so a queued import sends the tree as it is when its turn comes.
      const plan = await planWorkspace(runner, repo, { withWorkTree: from === undefined });
      const command = workspaceRemoteCommand(
        this.script,
        workspaceImportArgs({
          dir: plan.dir,
          from,
          branch: req.branch,
          gitConfig: plan.gitConfig,
        }),
      );

      const abort = new AbortController();
      const onAbort = () => abort.abort();
      signal.addEventListener("abort", onAbort, { once: true });
      const source = this.tarSource(plan.parts);
      // The commit member goes after the last part only once every tar succeeded.
      const feed = new PassThrough();
      source.stream.pipe(feed, { end: false });
      let bytes = 0;
      let reported = 0;
      source.stream.on("data", (c: Buffer) => {
        bytes += c.length;
        if (bytes - reported < 256 * 1024) return;
        reported = bytes;
        progress({
          stage: `import into ${target.vmName}:${plan.dir}`,
          current: bytes,
          total: Math.max(bytes, plan.estimatedBytes),
        });
      });
      let sourceError: unknown = null;
      // Every tar has exited once `done` resolves, but their output may still sit in the
      // stream's buffer: the marker goes after the stream has ended, i.e. after its last byte.
      const drained = new Promise<void>((resolve) => source.stream.once("end", resolve));
      source.done.then(
        () => drained.then(() => feed.end(commitTrailer(COMMIT_MEMBER, COMMIT_MARKER))),
        (err: unknown) => {
          sourceError = err;
          abort.abort();
        },
      );
      progress({
        stage: `import into ${target.vmName}:${plan.dir}`,
        current: 0,
        total: plan.estimatedBytes,
      });
      try {
        const r = await this.guestExec(target, command, {
          stdin: feed,
          signal: abort.signal,
          timeoutMs: this.deps.prepareTimeoutMs ?? 30 * 60_000,
          what: "the workspace import",
        }).catch((err: unknown) => {
          throw sourceError ?? err;
        });
        if (sourceError) throw sourceError;
        if (signal.aborted) throw new BangerError(ErrorCode.Cancelled, "cancelled");
        if (r.code === GuestStatus.NoGit) throw noGitError(target.vmName, "checkout");
        const out = r.stdout.toString("utf8");
        const base = /^no-git$/m.test(out) ? null : /^base (\S+)$/m.exec(out)?.[1];
        if (r.code !== 0 || base === undefined)
          throw new BangerError(
            ErrorCode.Internal,
            `could not prepare the workspace in ${target.vmName}: ${guestStderrTail(r.stderr) || `ssh exited with status ${r.code ?? r.signal}`}`,
            r.code === 255
              ? `SSH failed: 'banger vm health ${target.vmName}' checks the VM`
              : "the previous workspace (if any) was left as it was",
          );
        const checkedOut = /^files (\d+)$/m.exec(out)?.[1];
        const files = checkedOut !== undefined ? Number(checkedOut) : plan.files;
        return { vm: target.vmName, dir: plan.dir, base, files, bytes };
      } finally {
        signal.removeEventListener("abort", onAbort);
        source.kill();
        source.stream.unpipe(feed);
        feed.destroy();
      }
    });
  }

  async export(
    name: string,
    opts: { nameOnly?: boolean | undefined } = {},
    signal: AbortSignal = new AbortController().signal,
  ): Promise<ResultOf<"vm.workspace.export">> {
    const queued = await this.deps.vms.guestTarget(name);
    return this.deps.vms.exclusive("workspace", queued.vmId, async () => {
      const target = await this.currentTarget(name, queued.vmId);
      const nameOnly = opts.nameOnly ?? false;
      const command = workspaceRemoteCommand(this.script, workspaceExportArgs({ nameOnly }));
      const r = await this.guestExec(target, command, {
        signal,
        timeoutMs: this.deps.exportTimeoutMs ?? 10 * 60_000,
        maxStdoutBytes: EXPORT_RPC_MAX_BYTES,
        what: "the workspace export",
      });
      if (signal.aborted) throw new BangerError(ErrorCode.Cancelled, "cancelled");
      if (r.code !== 0) throw exportError(target.vmName, r);
      // Two header lines (dir, base), then the patch or the names, as bytes.
      const first = r.stdout.indexOf(0x0a);
      const second = first < 0 ? -1 : r.stdout.indexOf(0x0a, first + 1);
      if (second < 0)
        throw new BangerError(ErrorCode.Internal, "the guest's export output is malformed");
      const dir = r.stdout.subarray(0, first).toString("utf8");
      const base = r.stdout.subarray(first + 1, second).toString("utf8");
      const body = r.stdout.subarray(second + 1);
      if (nameOnly)
        return {
          dir,
          base,
          names: body
            .toString("utf8")
            .split("\0")
            .filter((n) => n.length > 0),
        };
      return { dir, base, patch: body.toString("base64") };
    });
  }
}
