import { parseArgs } from "node:util";
import pino from "pino";
import { BangerError, ErrorCode } from "../api/errors.js";
import { DEFAULT_BRIDGE, DEFAULT_SUBNET } from "../config/defaults.js";
import { defaultHelperSocket } from "../paths/helper-socket.js";
import { createCommandRunner, type CommandRunner } from "../system/runner.js";
import { lookupUser } from "../system/users.js";
import { HelperServer } from "./helper-server.js";
import { checkPinAgainstHost, makePin } from "./pin.js";
import { createRootOps } from "./privileged.js";

const USAGE = `banger-helper: the narrow root helper that lets an unprivileged bangerd use bridge networking

Usage: sudo banger-helper --user <name|uid> [--bridge <name>] [--subnet <cidr>] [--socket <path>]

  --user <name|uid>   the one user it serves: owns the socket (mode 0600) and the taps
  --bridge <name>     the one bridge it manages (default ${DEFAULT_BRIDGE}; prefix banger)
  --subnet <cidr>     the one private (RFC 1918) subnet on it, /16 to /29
                      (default ${DEFAULT_SUBNET}); it must not overlap a network
                      this host already has on another interface
  --socket <path>     where to listen (default /run/banger-helper/<uid>.sock; the
                      daemon finds it there, or via BANGER_HELPER_SOCKET or
                      [network] helper_socket)

It runs in the foreground and logs JSON lines to stderr; SIGTERM or Ctrl-C stops it
and removes the socket. It touches only its bridge, taps named bg-* owned by its
user, and the bridge's nftables table banger_<bridge>; everything else is refused.
Each user's helper needs its own bridge and subnet. See docs/helper.md.

Example:
  $ sudo banger-helper --user "$USER" &
  $ banger doctor        # helper: reachable at /run/banger-helper/1000.sock
`;

/** `alice` or `1000` → uid and primary gid, through NSS (getent). */
export async function resolveUser(
  spec: string,
  runner: CommandRunner,
): Promise<{ uid: number; gid: number }> {
  const user = await lookupUser(runner, spec);
  if (user) return { uid: user.uid, gid: user.gid };
  if (/^\d+$/.test(spec)) return { uid: Number(spec), gid: Number(spec) };
  throw new BangerError(
    ErrorCode.InvalidParams,
    `no user "${spec}"`,
    "pass --user with an existing user name or a numeric uid",
  );
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  const fail = (err: unknown): never => {
    const message = err instanceof Error ? err.message : String(err);
    const hint = err instanceof BangerError && err.hint ? `\n  hint: ${err.hint}` : "";
    process.stderr.write(`banger-helper: error: ${message}${hint}\n`);
    process.exit(1);
  };
  let values: { user?: string; socket?: string; bridge?: string; subnet?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        user: { type: "string" },
        socket: { type: "string" },
        bridge: { type: "string" },
        subnet: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    return fail(new BangerError(ErrorCode.InvalidParams, (err as Error).message, "see --help"));
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (!values.user)
    return fail(
      new BangerError(ErrorCode.InvalidParams, "--user is required", 'e.g. --user "$USER"'),
    );
  if (process.geteuid?.() !== 0)
    return fail(
      new BangerError(
        ErrorCode.Precondition,
        "banger-helper must run as root (it creates bridges, taps and NAT rules)",
        `sudo banger-helper --user ${values.user}`,
      ),
    );
  let pin: ReturnType<typeof makePin>;
  try {
    pin = makePin(values.bridge ?? DEFAULT_BRIDGE, values.subnet ?? DEFAULT_SUBNET);
  } catch (err) {
    return fail(err);
  }
  // Nothing it creates is ever readable by others; the socket is opened up to one user explicitly.
  process.umask(0o077);
  const runner = createCommandRunner();
  const log = pino({ name: "banger-helper" }, pino.destination(2));
  let server: HelperServer | null = null;
  const stop = (signal: string) => {
    log.info({ signal }, "stopping");
    void (server?.close() ?? Promise.resolve()).then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  try {
    const { uid, gid } = await resolveUser(values.user, runner);
    await checkPinAgainstHost(runner, pin);
    server = await HelperServer.start({
      socketPath: values.socket ?? defaultHelperSocket(uid),
      ops: createRootOps(runner, { pin, onlyForUid: uid }),
      uid,
      gid,
      pin,
      log,
    });
  } catch (err) {
    fail(err);
  }
}
