// Benchmark: `banger vm create` (create and boot to SSH) against a baseline in the
// same run that starts the same kernel, initramfs and image with a minimal QEMU
// command line and waits for SSH the same way. Target: banger <= 1.15x.
// Then 20 VMs created without starting: bytes each adds on disk (target <= 1 MiB).
// Not a test: run `make bench`.
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { createRootOverlay, createWorkDisk } from "../src/disk/work-disk.js";
import { waitForSsh } from "../src/guest/probe.js";
import { GuestShell } from "../src/guest/shell.js";
import { ensureSshIdentity } from "../src/guest/ssh.js";
import { Store } from "../src/store/store.js";
import { tcgKernelArgs } from "../src/system/accel.js";
import { createCommandRunner } from "../src/system/runner.js";
import { deleteEveryVm } from "../test/helpers/cli.js";
import { tempLayout } from "../test/helpers/temp-home.js";
import { imageServices, noOci } from "../test/helpers/services.js";

const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const banger = path.join(root, "bin", "banger");
const home = await tempLayout("banger-bench-vm-");
const runner = createCommandRunner();

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

try {
  console.log("preparing the default kernel and image ...");
  const store = Store.open(home.layout.dbFile);
  const { kernels, images } = imageServices(store, home.layout, { runner, oci: noOci });
  const kernel = await kernels.ensure("debian-cloud");
  const image = await images.ensure("debian-bookworm");
  store.close();
  const k = kernel.dir;
  const identity = await ensureSshIdentity(home.layout.sshDir, runner);
  const tsc = tcgKernelArgs(await fs.readFile("/proc/cpuinfo", "utf8")).join(" ");

  // Baseline: the same boot with a hand-written QEMU command line.
  const dir = path.join(home.home, "baseline");
  await fs.mkdir(dir);
  await createRootOverlay({
    backing: image.rootfsPath,
    file: path.join(dir, "root.qcow2"),
    runner,
  });
  await createWorkDisk({
    file: path.join(dir, "work.ext4"),
    sizeBytes: 1024 ** 3,
    authorizedKey: await fs.readFile(identity.publicKey, "utf8"),
    runner,
  });
  const port = await freePort();
  const t0 = performance.now();
  const qemu = spawn(
    "qemu-system-x86_64",
    [
      "-M",
      "microvm,acpi=on",
      "-accel",
      "tcg,thread=multi",
      "-cpu",
      "max",
      "-smp",
      "1",
      "-m",
      "1024M",
      "-nodefaults",
      "-display",
      "none",
      "-serial",
      "null",
      "-kernel",
      path.join(k, "vmlinuz"),
      "-initrd",
      path.join(k, "initrd.img"),
      "-append",
      `console=ttyS0 reboot=t panic=-1 rw root=/dev/vda ${tsc} banger.ip=10.0.2.15/24 banger.gw=10.0.2.2 banger.hostname=baseline`,
      "-drive",
      `id=root,file=${path.join(dir, "root.qcow2")},format=qcow2,if=none,cache=unsafe`,
      "-device",
      "virtio-blk-device,drive=root",
      "-drive",
      `id=work,file=${path.join(dir, "work.ext4")},format=raw,if=none,cache=unsafe`,
      "-device",
      "virtio-blk-device,drive=work",
      "-netdev",
      `user,id=n,hostfwd=tcp:127.0.0.1:${port}-:22`,
      "-device",
      "virtio-net-device,netdev=n",
    ],
    { stdio: "ignore" },
  );
  await waitForSsh({
    shell: new GuestShell(runner),
    target: { vmId: "baseline", vmName: "baseline", host: "127.0.0.1", port, identity },
    deadlineMs: 180_000,
    isAlive: async () => qemu.exitCode === null,
  });
  const baseline = (performance.now() - t0) / 1000;
  qemu.kill("SIGKILL");

  const env = { ...home.env, BANGER_NETWORK: "user" };
  const t1 = performance.now();
  await run(
    banger,
    [
      "vm",
      "create",
      "--cold",
      "--name",
      "bench",
      "--memory",
      "1G",
      "--vcpu",
      "1",
      "--disk-size",
      "1G",
    ],
    { env },
  );
  const bangerBoot = (performance.now() - t1) / 1000;
  await run(banger, ["vm", "delete", "bench"], { env });

  console.log(
    `create and boot to SSH: baseline ${baseline.toFixed(1)} s, banger ${bangerBoot.toFixed(1)} s, ratio ${(bangerBoot / baseline).toFixed(2)}x (target <= 1.15x)`,
  );

  const duBefore = Number((await run("du", ["-sk", home.layout.vmsDir])).stdout.split("\t")[0]);
  const t2 = performance.now();
  for (let i = 0; i < 20; i++)
    await run(banger, ["vm", "create", "--name", `idle${i}`, "--no-start", "--disk-size", "8G"], {
      env,
    });
  const createTime = (performance.now() - t2) / 1000;
  const duAfter = Number((await run("du", ["-sk", home.layout.vmsDir])).stdout.split("\t")[0]);
  const perVm = ((duAfter - duBefore) * 1024) / 20;
  console.log(
    `20 VMs created without starting: ${createTime.toFixed(1)} s in all, ${(perVm / 1024).toFixed(0)} KiB on disk each (target <= 1024 KiB; 8G work disks)`,
  );
  await run(banger, ["vm", "prune", "--force"], { env });
} finally {
  await deleteEveryVm(home.env).catch(() => undefined);
  await run(banger, ["daemon", "stop"], { env: home.env }).catch(() => undefined);
  await home.cleanup();
}
