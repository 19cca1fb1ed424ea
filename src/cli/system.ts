import net from "node:net";
import { Command } from "@commander-js/extra-typings";
import { packageRoot } from "../paths/package-root.js";
import type { SystemDeps } from "../system/system-deps.js";
import type { SystemStatus, UnitStatus } from "../system/system-status.js";
import { describeGroup, type CliDeps } from "./context.js";
import { formatTable, printJson } from "./output.js";

/** `alice` or `1000` → the passwd entry, through NSS (getent). */
function socketAnswers(socket: string, timeoutMs = 2_000): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.createConnection(socket);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      conn.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    conn.once("connect", () => done(true));
    conn.once("error", () => done(false));
  });
}

/**
 * The system verbs and their real dependencies, loaded when one runs: building the command tree
 * (help, completion) needs neither the helper client nor its schemas.
 */
async function loadSystem(deps: CliDeps): Promise<{
  verbs: {
    installSystem: typeof import("../system/system-install.js").installSystem;
    uninstallSystem: typeof import("../system/system-uninstall.js").uninstallSystem;
    systemStatus: typeof import("../system/system-status.js").systemStatus;
  };
  systemDeps: SystemDeps;
}> {
  const [{ installSystem }, { uninstallSystem }, { systemStatus }] = await Promise.all([
    import("../system/system-install.js"),
    import("../system/system-uninstall.js"),
    import("../system/system-status.js"),
  ]);
  const verbs = { installSystem, uninstallSystem, systemStatus };
  const { HelperClient } = await import("../net/helper-client.js");
  const { checkPinAgainstHost, cidrsOverlap, makePin } = await import("../net/pin.js");
  const { createCommandRunner } = await import("../system/runner.js");
  const { whyNotRootOwned } = await import("../system/root-owned.js");
  const { lookupUser } = await import("../system/users.js");
  const { userFilesVia } = await import("../system/user-files.js");
  const runner = createCommandRunner(deps.env);
  const euid = process.geteuid?.() ?? 0;
  const systemDeps: SystemDeps = {
    root: "/",
    runner,
    env: deps.env,
    euid,
    nodePath: process.execPath,
    installDir: packageRoot(),
    lookupUser: (spec) => lookupUser(runner, spec),
    userFiles: (user) => userFilesVia(runner, euid, user),
    whyNotRootOwned,
    async probeHelper(socket, uid) {
      try {
        const who = await new HelperClient(socket, { timeoutMs: 5_000 }).ping();
        return who.uid === uid
          ? { answers: true, detail: `banger-helper answers (pid ${who.pid})` }
          : { answers: false, detail: `the helper there serves uid ${who.uid}, not ${uid}` };
      } catch (err) {
        return { answers: false, detail: err instanceof Error ? err.message : String(err) };
      }
    },
    daemonAnswers: (socket) => socketAnswers(socket),
    async hostSubnetClash(bridge, subnet) {
      try {
        await checkPinAgainstHost(runner, makePin(bridge, subnet));
        return null;
      } catch (err) {
        return err instanceof Error ? err.message : String(err);
      }
    },
    pinFor: makePin,
    subnetsOverlap: cidrsOverlap,
    say: (line) => deps.out.stdout.write(`${line}\n`),
  };
  return { verbs, systemDeps };
}

const yesNo = (v: boolean | null) => (v === null ? "-" : v ? "yes" : "no");

function formatStatus(status: SystemStatus): string {
  const lines: string[] = [];
  if (!status.systemdRunning)
    lines.push("systemd is not running here: units cannot be enabled or started", "");
  if (status.installs.length === 0) {
    lines.push("no banger units are installed; install with: sudo banger system install");
    return `${lines.join("\n")}\n`;
  }
  for (const install of status.installs) {
    const row = (u: UnitStatus) => [
      u.unit,
      u.scope,
      u.installed ? "yes" : "no",
      yesNo(u.enabled),
      yesNo(u.active),
      u.answers ? "yes" : "no",
      u.installed ? u.path : `(not installed) ${u.path}`,
    ];
    lines.push(
      `user ${install.user} (uid ${install.uid})`,
      formatTable(
        ["UNIT", "SCOPE", "INSTALLED", "ENABLED", "ACTIVE", "ANSWERS", "FILE"],
        [row(install.helper), row(install.daemon)],
      ).trimEnd(),
      `helper socket: ${install.helper.socket}: ${install.helper.detail}`,
      `daemon socket: ${install.daemon.socket}: ${install.daemon.detail}`,
    );
    if (!install.helper.installed || !install.daemon.installed)
      lines.push(`install with: sudo banger system install --user ${install.user}`);
    lines.push("");
  }
  return `${lines.join("\n").trimEnd()}\n`;
}

export function systemCommand(deps: CliDeps): Command {
  const system = describeGroup(new Command("system"), {
    purpose:
      "Install banger as a service: bangerd as a systemd user unit and banger-helper as a narrow root helper for bridge networking.",
    examples: [
      "sudo banger system install            # for the user who ran sudo",
      "banger system status",
      "sudo banger system install --user alice --no-start",
      "sudo banger system uninstall",
    ],
    next: "'banger doctor' confirms the helper is reachable; 'banger system status' shows the units. See docs/system.md.",
  });
  system
    .command("install")
    .description("Write, enable and start the root helper's system unit and bangerd's user unit")
    .option("--user <name>", "the user who runs banger (default: the user who ran sudo)")
    .option("--no-start", "write (and, with systemd, enable) the units but start nothing")
    .option(
      "--bridge <name>",
      "the helper's one bridge (default: the unit's current one, else the first free banger<N>)",
    )
    .option(
      "--subnet <cidr>",
      "the helper's one private subnet (default: the unit's current one, else 172.30.<N>.0/24)",
    )
    .addHelpText(
      "after",
      "\nRun it with sudo. Running it again changes nothing unless banger's paths changed.\n\nExamples:\n  $ sudo banger system install\n  $ sudo banger system install --user alice --no-start\n  $ sudo banger system install --user bob --bridge banger1 --subnet 172.30.1.0/24\n",
    )
    .action(async (opts) => {
      const { verbs, systemDeps } = await loadSystem(deps);
      await verbs.installSystem(systemDeps, {
        user: opts.user,
        noStart: !opts.start,
        ...(opts.bridge !== undefined ? { bridge: opts.bridge } : {}),
        ...(opts.subnet !== undefined ? { subnet: opts.subnet } : {}),
      });
    });
  system
    .command("uninstall")
    .description(
      "Stop, disable and remove the units 'banger system install' wrote (VMs keep running)",
    )
    .option("--user <name>", "whose units (default: the user who ran sudo)")
    .addHelpText("after", "\nExamples:\n  $ sudo banger system uninstall\n")
    .action(async (opts) => {
      const { verbs, systemDeps } = await loadSystem(deps);
      await verbs.uninstallSystem(systemDeps, { user: opts.user });
    });
  system
    .command("status")
    .description(
      "Installed, enabled and active state of the units, and whether their sockets answer",
    )
    .option("--user <name>", "whose units (default: you, or the user who ran sudo)")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  $ banger system status\n  $ banger system status --json | jq '.installs[].helper'\n",
    )
    .action(async (opts) => {
      const { verbs, systemDeps } = await loadSystem(deps);
      const status = await verbs.systemStatus(systemDeps, { user: opts.user });
      if (opts.json) printJson(deps.out, status);
      else deps.out.stdout.write(formatStatus(status));
    });
  return system as unknown as Command;
}
