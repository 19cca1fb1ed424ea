// banger's per-VM frame filter between QEMU and passt, run detached so it outlives the
// daemon like the VMM does: `node netrelay-main.js <listen socket> <passt socket> <guest mac> <guest ip>`.
import { runRelay } from "./netrelay.js";

const [listenPath, upstreamPath, mac, ip] = process.argv.slice(2);
if (!listenPath || !upstreamPath || !mac || !ip) {
  process.stderr.write(
    "usage: netrelay-main <listen socket> <passt socket> <guest mac> <guest ip>\n",
  );
  process.exit(2);
}
process.on("SIGTERM", () => process.exit(0));
runRelay({
  listenPath,
  upstreamPath,
  guest: { mac, ip },
  log: (l) => process.stderr.write(`${l}\n`),
}).then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`netrelay: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
