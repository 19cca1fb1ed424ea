import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import type { VmInfo } from "../api/methods.js";
import { formatSizeBytes } from "../util/size.js";
import { readConfigSync } from "../config/config.js";
import { describeVmDefaults, resolveVmDefaults } from "../config/vm-defaults.js";
import { describeGroup, pending, withDaemon, type CliDeps } from "./context.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

const VM_ISSUE = "the VM lifecycle work (issue #5)";
const RUN_ISSUE = "'banger vm run' (issue #6)";

/** `--help` of create/run shows what a VM gets when no flag is given, and where each value came from. */
function resolvedDefaultsHelp(deps: CliDeps): string {
  try {
    const config = readConfigSync(deps.layout.configFile);
    return `\nDefaults on this machine: ${describeVmDefaults(resolveVmDefaults(config, deps.host))}\n(config: ${deps.layout.configFile})\n`;
  } catch (err) {
    return `\nDefaults: cannot be resolved: ${(err as Error).message}\n`;
  }
}

function vmSizingOptions(cmd: CommandUnknownOpts): CommandUnknownOpts {
  cmd
    .option("--image <name>", "image to boot (default: config default_image_name)")
    .option("--vcpu <n>", "virtual CPUs")
    .option("--memory <size>", "memory, e.g. 2G or 2048 (MiB)")
    .option("--disk-size <size>", "work disk size, e.g. 8G")
    .option("--nat", "give the VM outbound network access through NAT");
  return cmd;
}

export function vmCommand(deps: CliDeps): Command {
  const vm = describeGroup(new Command("vm"), {
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

  const run = vmSizingOptions(
    new Command("run")
      .description("Boot a VM, import a repo, and run a command or a shell in it")
      .argument("[path]", "git repository to import into /root/<repo-name>")
      .argument("[cmd...]", "command to run after --")
      .option("--name <name>", "VM name (DNS label; generated when omitted)")
      .option("--rm", "delete the VM when the command or shell ends")
      .option("--branch <name>", "create this branch in the guest workspace (needs a path)")
      .option("--from <ref>", "base the workspace on this ref (needs a path)"),
  );
  run.addHelpText("after", () => resolvedDefaultsHelp(deps));
  run.action(pending("banger vm run", RUN_ISSUE));
  vm.addCommand(run);

  const create = vmSizingOptions(
    new Command("create")
      .description("Create a VM and boot it")
      .option("--name <name>", "VM name (DNS label; generated when omitted)")
      .option("--kernel-ref <name>", "kernel to boot (default: the image's kernel)")
      .option("--no-start", "create the disks but do not boot"),
  );
  create.addHelpText("after", () => resolvedDefaultsHelp(deps));
  create.action(pending("banger vm create", VM_ISSUE));
  vm.addCommand(create);

  vm.command("start")
    .description("Start a stopped VM")
    .argument("<name>")
    .action(pending("banger vm start", VM_ISSUE));
  vm.command("stop")
    .description("Stop a running VM gracefully")
    .argument("<name>")
    .action(pending("banger vm stop", VM_ISSUE));
  vm.command("restart")
    .description("Stop then start a VM")
    .argument("<name>")
    .action(pending("banger vm restart", VM_ISSUE));
  vm.command("kill")
    .description("Force-kill a VM (use when 'vm stop' hangs)")
    .argument("<name>")
    .action(pending("banger vm kill", VM_ISSUE));
  vm.command("delete")
    .alias("rm")
    .description("Stop a VM and remove its disks (irreversible)")
    .argument("<names...>")
    .action(pending("banger vm delete", VM_ISSUE));
  vm.command("prune")
    .description("Delete every VM that is not running (asks first)")
    .option("-f, --force", "do not ask for confirmation")
    .action(pending("banger vm prune", VM_ISSUE));

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
    .action(pending("banger vm ssh", VM_ISSUE));
  vm.command("logs")
    .description("Show a VM's serial console")
    .argument("<name>")
    .option("-f, --follow", "keep printing new output")
    .action(pending("banger vm logs", VM_ISSUE));
  vm.command("stats")
    .description("Configured size, VMM memory and CPU time, disk bytes used")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(pending("banger vm stats", VM_ISSUE));
  vm.command("ports")
    .description("Listening TCP/UDP sockets in the guest")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(pending("banger vm ports", VM_ISSUE));
  vm.command("set")
    .description("Change vcpu or memory of a stopped VM")
    .argument("<name>")
    .option("--vcpu <n>", "virtual CPUs")
    .option("--memory <size>", "memory, e.g. 4G")
    .action(pending("banger vm set", VM_ISSUE));
  vm.command("health")
    .description("Check that the VMM runs and SSH answers")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(pending("banger vm health", VM_ISSUE));

  const workspace = describeGroup(new Command("workspace"), {
    purpose: "Move a git repo into a VM and get the guest's changes back as a patch.",
    examples: [
      "banger vm workspace prepare dev ./repo",
      "banger vm workspace export dev -o changes.patch",
    ],
    next: "'git apply changes.patch' in your checkout.",
  });
  workspace
    .command("prepare")
    .description("Import a git repo into /root/<repo-name> in the VM")
    .argument("<vm>")
    .argument("<path>")
    .option("--branch <name>", "create this branch in the guest")
    .option("--from <ref>", "base ref")
    .action(pending("banger vm workspace prepare", RUN_ISSUE));
  workspace
    .command("export")
    .description("Print the guest workspace's changes as a binary-safe patch")
    .argument("<vm>")
    .option("--name-only", "list changed files only")
    .option("-o, --output <file>", "write the patch to a file")
    .action(pending("banger vm workspace export", RUN_ISSUE));
  vm.addCommand(workspace);

  const session = describeGroup(new Command("session"), {
    purpose:
      "Named long-running processes in a VM that outlive the SSH connection that started them.",
    examples: [
      "banger vm session start dev server -- npm run dev",
      "banger vm session logs dev server -f",
    ],
    next: "'banger vm session stop <vm> <name>' when done.",
  });
  for (const [verb, summary] of [
    ["start", "Start a named process"],
    ["list", "List sessions in a VM"],
    ["show", "Show a session's state, pid and exit code"],
    ["logs", "Print a session's output"],
    ["send", "Write text to a session's stdin"],
    ["attach", "Attach your terminal to a session"],
    ["stop", "Stop a session (SIGTERM, then SIGKILL)"],
    ["kill", "Kill a session (SIGKILL)"],
  ] as const) {
    const sub = session.command(verb).description(summary).argument("[args...]");
    if (verb === "list") sub.alias("ls");
    if (verb === "list" || verb === "show") sub.option("--json", "print JSON");
    sub.action(pending(`banger vm session ${verb}`, RUN_ISSUE));
  }
  vm.addCommand(session);

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
    ["created", v.createdAt],
  ]);
}
