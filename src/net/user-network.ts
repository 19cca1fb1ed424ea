import net from "node:net";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CommandRunner } from "../system/runner.js";
import type { NetworkAttachment, NetworkBackend, NetworkHandles, NetworkVm } from "./backend.js";
import { startUserNat, stopUserNat, userNatRunning, USER_NET } from "./user-nat.js";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Rootless user-mode networking, SSH forwarded on 127.0.0.1: QEMU's slirp restricted
 * (no egress, no host) without --nat; passt behind banger's frame filter with it.
 */
export class UserNetwork implements NetworkBackend {
  constructor(
    private readonly runner: CommandRunner,
    private readonly log?: { error(obj: object, msg: string): void },
  ) {}

  async attachVm(
    vm: NetworkVm,
    opts: {
      vmDir: string;
      driver: { userNetworking: boolean };
      progress: (message: string) => void;
    },
  ): Promise<NetworkAttachment> {
    if (!opts.driver.userNetworking)
      throw new BangerError(
        ErrorCode.Precondition,
        "Firecracker has no user-mode networking",
        'run bangerd as root for bridge networking, or set vmm = "qemu"',
      );
    const sshPort = await freePort();
    const attachment: NetworkAttachment = {
      vmm: { mode: "user", sshPort },
      kernelArgs: [
        `banger.ip=${USER_NET.ip}/${USER_NET.prefix}`,
        `banger.gw=${USER_NET.gateway}`,
        `banger.dns=${USER_NET.dns}`,
      ],
      ip: USER_NET.ip,
      mac: null,
      handles: { tap: null },
    };
    if (!vm.nat) return attachment;
    opts.progress("passt (user-mode egress)");
    const userNet = await startUserNat({ dir: opts.vmDir, sshPort, runner: this.runner });
    return {
      ...attachment,
      vmm: { mode: "user", sshPort, stream: userNet.socket },
      handles: { tap: null, userNet },
    };
  }

  async releaseVm(
    handles: NetworkHandles,
    vmDir: string,
    opts: { failed?: boolean } = {},
  ): Promise<void> {
    if (!handles.userNet) return;
    // A VM that never started: its helpers go best-effort, the start's own error is what counts.
    if (opts.failed) await stopUserNat(handles.userNet, vmDir).catch(() => undefined);
    else await stopUserNat(handles.userNet, vmDir);
  }

  async adoptVm(vm: NetworkVm, handles: NetworkHandles, vmDir: string): Promise<void> {
    if (handles.userNet && !(await userNatRunning(handles.userNet, vmDir)))
      this.log?.error({ vm: vm.name }, "passt or the network filter is gone: no egress");
  }
}
