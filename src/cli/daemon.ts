import { Command } from "@commander-js/extra-typings";
import { isPidAlive } from "../vmm/process.js";
import { describeGroup, type CliDeps } from "./context.js";
import { formatFields, printJson } from "./output.js";

export function daemonCommand(deps: CliDeps): Command {
  const daemon = describeGroup(new Command("daemon"), {
    purpose:
      "bangerd owns banger's state and VM processes. Other commands start it on demand, so you rarely need this group.",
    examples: [
      "banger daemon status",
      "banger daemon stop    # VMs keep running; the next command restarts it",
    ],
    next: "'banger doctor' if the daemon will not start.",
  });

  daemon
    .command("start")
    .description("Start bangerd in the background (no-op when it runs)")
    .action(async () => {
      const running = await deps.tryConnect();
      if (running) {
        const { pid } = await running.call("daemon.ping", {}).finally(() => running.close());
        deps.out.stdout.write(`bangerd is already running (pid ${pid})\n`);
        return;
      }
      const pid = await deps.startDaemon();
      deps.out.stdout.write(`started bangerd (pid ${pid})\n`);
    });

  daemon
    .command("stop")
    .description("Stop bangerd; running VMs keep running and are re-adopted on next start")
    .action(async () => {
      const client = await deps.tryConnect();
      if (!client) {
        deps.out.stdout.write("bangerd is not running\n");
        return;
      }
      const { pid } = await client.call("daemon.ping", {});
      // The daemon may close the socket before its reply arrives; its exit is what counts.
      await client
        .call("daemon.shutdown", {})
        .catch(() => {})
        .finally(() => client.close());
      // Bounded wait so `daemon stop && daemon start` never races the old process.
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && isPidAlive(pid)) await new Promise((r) => setTimeout(r, 50));
      deps.out.stdout.write(
        isPidAlive(pid)
          ? `bangerd (pid ${pid}) is still shutting down\n`
          : `stopped bangerd (pid ${pid})\n`,
      );
    });

  daemon
    .command("status")
    .description("Is bangerd running; its pid, uptime and paths")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const client = await deps.tryConnect();
      if (!client) {
        if (opts.json)
          return printJson(deps.out, { running: false, socket: deps.layout.socketFile });
        deps.out.stdout.write(`bangerd is not running (socket ${deps.layout.socketFile})\n`);
        return;
      }
      const status = await client.call("daemon.status", {}).finally(() => client.close());
      if (opts.json) return printJson(deps.out, { running: true, ...status });
      deps.out.stdout.write(
        formatFields([
          ["state", "running"],
          ["pid", String(status.pid)],
          ["version", status.version],
          ["uptime", `${Math.round(status.uptimeMs / 1000)}s`],
          ["socket", status.socket],
          ["state dir", status.stateDir],
          ["log", deps.layout.daemonLogFile],
          ["schema", `v${status.schemaVersion}`],
        ]),
      );
    });

  return daemon as unknown as Command;
}
