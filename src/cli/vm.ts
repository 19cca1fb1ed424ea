import { Command } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { remoteCommand } from "../guest/image-env.js";
import { endpointSshArgs, guestSshEnv } from "../guest/ssh.js";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline/promises";
import { formatSizeBytes, parseSize } from "../util/size.js";
import { parseVcpu, resolvedDefaultsHelp, resolveSizing, vmSizingOptions } from "./vm-options.js";
import { runCommand } from "./vm-run.js";
import { describeGroup, ExitStatus, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";
import { workspaceCommand } from "./vm-workspace.js";
import { sessionCommand } from "./vm-session.js";
import { vmSnapshotCommands } from "./vm-snapshot.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";
import { visibleLines } from "../util/terminal-text.js";
import { LogFollower, readConsole } from "../vmm/console-log.js";

export function vmCommand(deps: CliDeps): Command {
  const vm = describeGroup(new Command("vm").enablePositionalOptions(), {
    purpose:
      "Create, run and manage microVMs. Most people want 'banger vm run': a fresh VM with your repo in it, one command, then gone.",
    examples: [
      "banger vm run ./repo -- make test    # boot, import ./repo, run, exit with its status",
      "banger vm run --rm -- uname -a       # throwaway VM for one command",
      "banger vm create --name dev && banger vm ssh dev",
      "banger vm list",
    ],
    next: "'banger vm ssh <name>' to get a shell, 'banger vm delete <name>' when done.",
  });

  vm.addCommand(runCommand(deps));

  const create = vmSizingOptions(
    new Command("create")
      .description("Create a VM and boot it")
      .option("--name <name>", "VM name (DNS label; generated when omitted)")
      .option("--kernel-ref <name>", "kernel to boot (default: the image's kernel)")
      .option("--no-start", "create the disks but do not boot")
      .option(
        "--json",
        "print the created VM as JSON (with `restored`: true when warm start restored it)",
      )
      .option(
        "--from-snapshot <snapshot>",
        "clone a snapshot: restore its saved state instead of booting (image, kernel and sizes are the snapshot's)",
      ),
  );
  create.addHelpText("after", () => resolvedDefaultsHelp(deps));
  create.action(async (...args: unknown[]) => {
    const opts = args.at(-2);
    const o = opts as {
      name?: string;
      image?: string;
      kernelRef?: string;
      vcpu?: string;
      memory?: string;
      diskSize?: string;
      nat?: boolean;
      start?: boolean;
      fromSnapshot?: string;
      cold?: boolean;
      json?: boolean;
    };
    if (o.fromSnapshot !== undefined) {
      const given = (
        [
          ["--image", o.image],
          ["--kernel-ref", o.kernelRef],
          ["--vcpu", o.vcpu],
          ["--memory", o.memory],
          ["--disk-size", o.diskSize],
          ["--cold", o.cold],
        ] as const
      ).filter(([, v]) => v !== undefined);
      if (given.length > 0)
        throw new BangerError(
          ErrorCode.InvalidParams,
          `--from-snapshot cannot be given with ${given.map(([f]) => f).join(", ")}`,
          "a clone has the snapshot's image, kernel and sizes ('banger snapshot show <name>' lists them)",
        );
    }
    const sizing = o.fromSnapshot === undefined ? resolveSizing(deps, o) : null;
    const progress = createProgressRenderer(deps.out);
    const info = await withDaemon(deps, (c) =>
      c.call(
        "vm.create",
        sizing === null
          ? {
              ...(o.name ? { name: o.name } : {}),
              fromSnapshot: o.fromSnapshot,
              nat: o.nat ?? false,
              start: o.start !== false,
            }
          : {
              ...(o.name ? { name: o.name } : {}),
              ...(o.image ? { image: o.image } : {}),
              ...(o.kernelRef ? { kernelRef: o.kernelRef } : {}),
              ...sizing,
              nat: o.nat ?? false,
              start: o.start !== false,
              ...(o.cold ? { cold: true } : {}),
            },
        { onProgress: progress.report },
      ),
    ).finally(() => progress.done());
    for (const w of info.warnings) deps.out.stderr.write(`warning: ${w}\n`);
    if (o.json) {
      deps.out.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
      return;
    }
    deps.out.stdout.write(`${info.name}\n`);
    deps.out.stderr.write(
      info.state === "running"
        ? `VM ${info.name} is running${info.restored ? ` (restored from snapshot ${info.snapshot ?? "?"})` : ""}: 'banger vm ssh ${info.name}' for a shell, 'banger vm delete ${info.name}' when done\n`
        : `VM ${info.name} created (not started): 'banger vm start ${info.name}'\n`,
    );
  });

  vm.addCommand(create);

  const lifecycle = (verb: "start" | "stop" | "restart" | "kill", summary: string, done: string) =>
    vm
      .command(verb)
      .description(summary)
      .argument("<name>")
      .action(async (name) => {
        const progress = createProgressRenderer(deps.out);
        const info = await withDaemon(deps, (c) =>
          verb === "start" || verb === "restart"
            ? c.call(`vm.${verb}`, { name }, { onProgress: progress.report })
            : c.call(`vm.${verb}`, { name }),
        ).finally(() => progress.done());
        deps.out.stdout.write(`${info.name} ${done} (${info.state})\n`);
      });
  lifecycle("start", "Start a stopped VM", "started");
  lifecycle("stop", "Stop a running VM gracefully", "stopped");
  lifecycle("restart", "Stop then start a VM", "restarted");
  lifecycle("kill", "Force-kill a VM (use when 'vm stop' hangs)", "killed");
  vm.command("delete")
    .alias("rm")
    .description("Stop a VM and remove its disks (irreversible)")
    .argument("<names...>")
    .action(async (names: string[]) => {
      const r = await withDaemon(deps, (c) => c.call("vm.delete", { names }));
      for (const name of r.deleted) deps.out.stdout.write(`deleted ${name}\n`);
    });
  vm.command("prune")
    .description("Delete every VM that is not running (asks first)")
    .option("-f, --force", "do not ask for confirmation")
    .action(async (opts) => {
      const all = await withDaemon(deps, (c) => c.call("vm.list", {}));
      const doomed = all.filter((v) => v.state !== "running");
      if (doomed.length === 0) {
        deps.out.stdout.write("nothing to prune: every VM is running\n");
        return;
      }
      if (!opts.force) {
        if (!process.stdin.isTTY) {
          throw new BangerError(
            ErrorCode.InvalidParams,
            `prune would delete ${doomed.length} VM(s) and needs confirmation`,
            "run it in a terminal, or pass --force",
          );
        }
        const rl = createInterface({ input: process.stdin, output: process.stderr });
        const answer = await rl.question(`delete ${doomed.map((v) => v.name).join(", ")}? [y/N] `);
        rl.close();
        if (!/^y(es)?$/i.test(answer.trim())) {
          deps.out.stdout.write("nothing deleted\n");
          return;
        }
      }
      const r = await withDaemon(deps, (c) => c.call("vm.prune", {}));
      for (const name of r.deleted) deps.out.stdout.write(`deleted ${name}\n`);
      for (const f of r.failed) deps.out.stderr.write(`could not delete ${f.name}: ${f.error}\n`);
      if (r.failed.length > 0) throw new ExitStatus(1);
    });

  vm.command("list")
    .alias("ls")
    .description("List VMs")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const vms = await withDaemon(deps, (c) => c.call("vm.list", {}));
      if (opts.json) return printJson(deps.out, vms);
      if (vms.length === 0) {
        deps.out.stdout.write(
          "no VMs yet: create one with 'banger vm run' or 'banger vm create'\n",
        );
        return;
      }
      deps.out.stdout.write(
        formatTable(
          ["NAME", "STATE", "IMAGE", "VCPU", "MEMORY", "DISK", "IP"],
          vms.map((v) => [
            v.name,
            v.state,
            orDash(v.image),
            String(v.vcpu),
            formatSizeBytes(v.memoryBytes),
            formatSizeBytes(v.diskBytes),
            orDash(v.ip),
          ]),
        ),
      );
    });

  vm.command("show")
    .description("Show one VM")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name, opts) => {
      const info = await withDaemon(deps, (c) => c.call("vm.show", { name }));
      if (opts.json) return printJson(deps.out, info);
      deps.out.stdout.write(formatVm(info));
    });

  vm.command("ssh")
    .description("Open an SSH session to a VM, or run a command in it")
    .argument("<name>")
    .argument("[cmd...]", "command to run after --")
    .action(async (name: string, cmd: string[]) => {
      const target = await withDaemon(deps, (c) => c.call("vm.ssh", { name }));
      const args = endpointSshArgs(name, target);
      // A command gets the image's Env and WorkingDir here; a login shell from its profile
      // (image-profile.sh) or banger's login shell, which sshd starts as it always has.
      if (cmd.length > 0) args.push("--", remoteCommand(null, cmd));
      else if (process.stdin.isTTY) args.unshift("-t");
      // OpenSSH owns the terminal; its exit status becomes ours.
      const status = await new Promise<number>((resolve, reject) => {
        const child = spawn("ssh", args, { stdio: "inherit", env: guestSshEnv(process.env) });
        child.on("error", reject);
        child.on("close", (code, signal) => resolve(code ?? (signal ? 137 : 1)));
      });
      if (status !== 0) throw new ExitStatus(status);
    });

  vm.command("logs")
    .description("Show a VM's serial console")
    .argument("<name>")
    .option("-f, --follow", "keep printing new output")
    .action(async (name: string, opts: { follow?: boolean }) => {
      const { path: log } = await withDaemon(deps, (c) => c.call("vm.logs", { name }));
      if (!opts.follow) {
        deps.out.stdout.write(readConsole(log));
        return;
      }
      // Only what is new is read at each poll, across the log's rotation.
      const follower = new LogFollower(log, (chunk) => deps.out.stdout.write(chunk));
      follower.poll();
      await new Promise<never>(() => setInterval(() => follower.poll(), 500));
    });

  vm.command("stats")
    .description("Configured size, VMM memory and CPU time, disk bytes used")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name: string, opts: { json?: boolean }) => {
      const st = await withDaemon(deps, (c) => c.call("vm.stats", { name }));
      if (opts.json) return printJson(deps.out, st);
      deps.out.stdout.write(
        formatFields([
          ["name", st.name],
          ["vcpu", String(st.vcpu)],
          ["memory", formatSizeBytes(st.memoryBytes)],
          ["vmm rss", st.rssBytes === null ? "- (not running)" : formatSizeBytes(st.rssBytes)],
          ["vmm cpu", st.cpuSeconds === null ? "-" : `${st.cpuSeconds.toFixed(1)} s`],
          ["root overlay", formatSizeBytes(st.overlayBytes)],
          ["work disk", formatSizeBytes(st.workDiskBytes)],
        ]),
      );
    });
  vm.command("ports")
    .description("Listening TCP/UDP sockets in the guest")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name: string, opts: { json?: boolean }) => {
      const ports = await withDaemon(deps, (c) => c.call("vm.ports", { name }));
      if (opts.json) return printJson(deps.out, ports);
      deps.out.stdout.write(
        formatTable(
          ["PROTO", "ADDRESS", "PORT", "PROCESS"],
          ports.map((p) => [p.proto, p.address, String(p.port), orDash(p.process)]),
        ),
      );
    });
  vm.command("set")
    .description("Change vcpu or memory of a stopped VM")
    .argument("<name>")
    .option("--vcpu <n>", "virtual CPUs")
    .option("--memory <size>", "memory, e.g. 4G")
    .action(async (name: string, opts: { vcpu?: string; memory?: string }) => {
      if (!opts.vcpu && !opts.memory)
        throw new BangerError(
          ErrorCode.InvalidParams,
          "nothing to change",
          "give --vcpu and/or --memory",
        );
      const info = await withDaemon(deps, (c) =>
        c.call("vm.set", {
          name,
          ...(opts.vcpu ? { vcpu: parseVcpu(opts.vcpu, deps.host) } : {}),
          ...(opts.memory ? { memoryBytes: parseSize(opts.memory) } : {}),
        }),
      );
      deps.out.stdout.write(
        `${info.name}: ${info.vcpu} vcpu · ${formatSizeBytes(info.memoryBytes)} (applies at next start)\n`,
      );
    });
  vm.command("health")
    .description("Check that the VMM runs and SSH answers")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name: string, opts: { json?: boolean }) => {
      const h = await withDaemon(deps, (c) => c.call("vm.health", { name }));
      if (opts.json) printJson(deps.out, h);
      else deps.out.stdout.write(`${h.name}: ${visibleLines(h.detail)}\n`);
      if (!h.vmm || !h.ssh) throw new ExitStatus(1);
    });

  for (const c of vmSnapshotCommands(deps)) vm.addCommand(c);

  vm.addCommand(workspaceCommand(deps));

  vm.addCommand(sessionCommand(deps));

  return vm as unknown as Command;
}

function formatVm(v: VmInfo): string {
  return formatFields([
    ["name", v.name],
    ["id", v.id],
    ["state", v.state],
    ["image", orDash(v.image)],
    ["kernel", orDash(v.kernel)],
    ["vcpu", String(v.vcpu)],
    ["memory", formatSizeBytes(v.memoryBytes)],
    ["disk", formatSizeBytes(v.diskBytes)],
    ["ip", orDash(v.ip)],
    ["vmm", orDash(v.vmm)],
    ...(v.snapshot ? ([["cloned from", v.snapshot]] as Array<[string, string]>) : []),
    ["created", v.createdAt],
    ...networkFields(v),
  ]);
}

/** The network line of `vm show`, with what failed and what to do when the bridge could not be set up. */
function networkFields(v: VmInfo): Array<[string, string]> {
  const n = v.network;
  if (!n) return [];
  if (n.mode === "bridge") return [["network", "bridge"]];
  if (!n.problem) return [["network", "user-mode"]];
  return [
    ["network", `user-mode, because ${n.problem}`],
    ...(n.hint ? ([["fix", n.hint]] as Array<[string, string]>) : []),
  ];
}
