import fsp from "node:fs/promises";
import path from "node:path";
import { sweepImportSpools, type ProcessStartTime } from "../image/import-spool.js";
import { KERNEL_NAME } from "../kernel/kernel-dir.js";
import type { Layout } from "../paths/layout.js";
import type { Store } from "../store/store.js";
import { sweepSnapshots } from "../snapshot/sweep.js";
import { removeTree } from "../util/remove-tree.js";
import { VM_CREATING_MARKER } from "../vm/context.js";

export interface SweepDeps {
  store: Store;
  layout: Layout;
  log?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
  /** Which CLIs still run (their spools are kept); /proc when not given. */
  startTime?: ProcessStartTime;
}

export interface SweepResult {
  /**
   * Paths removed: left by a daemon that died mid-create, mid-build or mid-install, or by a
   * CLI killed while `image import -` spooled its stdin.
   */
  removed: string[];
  /** Entries that are not banger's names (or not plain directories): left alone. */
  skipped: string[];
  /** Finished VM, image or kernel dirs that no row names: reported, never removed. */
  unowned: string[];
  /** Snapshot rows whose directory was gone: dropped (sweepSnapshots). */
  droppedSnapshots: string[];
}

// The names banger gives what it makes under each state dir (see the services that make them):
// VM and image ids are 6 random bytes in hex; staging and moved-aside copies carry a suffix.
const ID = "[0-9a-f]{12}";
const VM_ENTRY = new RegExp(`^${ID}$`);
const IMAGE_WORK = new RegExp(`^${ID}(\\.staging|\\.staging-[0-9a-f]{8}|\\.old-[0-9a-f]{8})$`);
const IMAGE_DONE = new RegExp(`^${ID}$`);
const KERNEL_WORK = /^(.+)\.(staging|old)-[0-9a-f]{8}$|^banger-kernel-[A-Za-z0-9]{6}$/;

/** What an entry is: work a killed daemon left (removed), something finished (kept), or not ours. */
type Kind = "work" | "finished" | "foreign";

function kernelKind(name: string): Kind {
  const work = KERNEL_WORK.exec(name);
  if (work) return work[1] === undefined || KERNEL_NAME.test(work[1]) ? "work" : "foreign";
  return KERNEL_NAME.test(name) ? "finished" : "foreign";
}

/** A VM dir is an unfinished create while it holds the marker, or nothing at all yet. */
async function vmKind(name: string, entry: string): Promise<Kind> {
  if (!VM_ENTRY.test(name)) return "foreign";
  const inside = await fsp.readdir(entry).catch(() => null);
  if (inside === null) return "foreign";
  return inside.length === 0 || inside.includes(VM_CREATING_MARKER) ? "work" : "finished";
}

/**
 * Start-up sweep, before any request is served: removes what a daemon killed half-way left
 * under vms/, images/ and kernels/ that no store row owns (a VM dir whose row was never
 * written, still holding its `creating` marker; an image's `<id>.staging`; a kernel's
 * `.staging-*`). Only banger's own work names, only real directories (a symlink is never
 * followed nor removed), never anything a row's path lies in, however that path is spelled,
 * and never a finished VM, image or kernel dir, even one no row names (only logged). Then
 * snapshots/ (sweepSnapshots) and the stdin spools under imports/ whose CLI is gone
 * (sweepImportSpools).
 */
export async function sweepOrphans(deps: SweepDeps): Promise<SweepResult> {
  const { store, layout } = deps;
  const owned: string[] = [
    ...store.listVms().map((v) => path.join(layout.vmsDir, v.id)),
    ...store.listImages().map((i) => i.rootfsPath),
    ...store.listKernels().map((k) => k.dir),
  ];
  // Each owned path as written and as resolved (a row may name the state dir through a symlink).
  const protect = new Set<string>();
  for (const p of owned) {
    protect.add(path.resolve(p));
    const real = await fsp.realpath(p).catch(() => null);
    if (real) protect.add(real);
  }
  const mounts = await mountPoints();
  const result: SweepResult = { removed: [], skipped: [], unowned: [], droppedSnapshots: [] };
  const areas: Array<[string, (name: string, entry: string) => Kind | Promise<Kind>]> = [
    [layout.vmsDir, vmKind],
    [
      layout.imagesDir,
      (n) => (IMAGE_WORK.test(n) ? "work" : IMAGE_DONE.test(n) ? "finished" : "foreign"),
    ],
    [layout.kernelsDir, kernelKind],
  ];
  for (const [dir, kindOf] of areas) {
    const names = await fsp.readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const entry = path.join(dir, name);
      const stat = await fsp.lstat(entry).catch(() => null);
      if (!stat) continue;
      const kind = stat.isDirectory() ? await kindOf(name, entry) : "foreign";
      if (kind === "foreign") {
        result.skipped.push(entry);
        continue;
      }
      const spellings = [entry, await fsp.realpath(entry).catch(() => entry)];
      const isOwned = [...protect].some((p) =>
        spellings.some((s) => p === s || p.startsWith(`${s}${path.sep}`)),
      );
      if (isOwned) continue;
      // Finished work no row names (a lost or replaced banger.db, a crash between publishing
      // and recording): it may be all the user has of a VM's disks, so it is only reported.
      if (kind === "finished") {
        deps.log?.error(
          { path: entry },
          "no VM, image or kernel row names this finished directory: left alone; remove it by hand if it is not needed",
        );
        result.unowned.push(entry);
        continue;
      }
      // A build killed mid-way may have left a mount inside (a chroot's /proc, /dev): never
      // recurse into the host's files through it; say so and leave it for the user.
      if (mounts.some((m) => spellings.some((s) => m === s || m.startsWith(`${s}${path.sep}`)))) {
        deps.log?.error({ path: entry }, "a leftover holds a mount point: left alone, unmount it");
        result.skipped.push(entry);
        continue;
      }
      try {
        await removeTree(entry);
        result.removed.push(entry);
        deps.log?.info({ path: entry }, "removed what no VM, image or kernel owns");
      } catch (err) {
        deps.log?.error({ err, path: entry }, "could not remove a leftover");
      }
    }
  }
  const snapshots = await sweepSnapshots(store, layout, deps.log);
  result.removed.push(...snapshots.removed);
  result.skipped.push(...snapshots.skipped);
  result.droppedSnapshots.push(...snapshots.dropped);
  for (const file of await sweepImportSpools(layout.importsDir, deps.startTime)) {
    result.removed.push(file);
    deps.log?.info({ path: file }, "removed a stdin import spool whose CLI is gone");
  }
  if (result.skipped.length > 0)
    deps.log?.info({ paths: result.skipped }, "left alone: not a name banger makes");
  return result;
}

/** Mount points (from /proc/self/mountinfo, octal escapes decoded); none when it cannot be read. */
async function mountPoints(): Promise<string[]> {
  const text = await fsp.readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  return text
    .split("\n")
    .map((l) => l.split(" ")[4])
    .filter((m): m is string => m !== undefined && m !== "")
    .map((m) => m.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}
