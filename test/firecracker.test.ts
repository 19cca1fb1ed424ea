import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { parse } from "yaml";
import { createWorkDisk } from "../src/disk/work-disk.js";
import { DEFAULT_KERNEL_CMDLINE, readKernelDir } from "../src/kernel/kernel-dir.js";
import { detectAccel, realAccelDeps } from "../src/system/accel.js";
import { createCommandRunner, runChecked } from "../src/system/runner.js";
import type { VmHandles, VmSpec } from "../src/vmm/driver.js";
import {
  apiRequest,
  FirecrackerDriver,
  firecrackerRequests,
} from "../src/vmm/firecracker/driver.js";
import { sharedDefaultImage } from "./helpers/shared-image.js";

// Firecracker's own API definition (swagger 2.0), shipped in ../shared.
type Schema = {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  enum?: unknown[];
  items?: Schema;
  $ref?: string;
  minimum?: number;
  maximum?: number;
};
interface Swagger {
  paths: Record<
    string,
    Record<string, { parameters?: Array<{ in: string; schema?: Schema; required?: boolean }> }>
  >;
  definitions: Record<string, Schema>;
}

const apiFile = new URL("../../shared/firecracker-api.yaml", import.meta.url);

async function loadApi(): Promise<Swagger> {
  return parse(await fs.readFile(apiFile, "utf8")) as Swagger;
}

/** Errors for `value` against a swagger schema: types, required fields, unknown fields, enums, bounds. */
function validate(api: Swagger, schema: Schema, value: unknown, where: string): string[] {
  if (schema.$ref)
    return validate(api, api.definitions[schema.$ref.replace("#/definitions/", "")]!, value, where);
  const errors: string[] = [];
  if (schema.enum && !schema.enum.includes(value))
    errors.push(`${where}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  switch (schema.type) {
    case "object": {
      if (typeof value !== "object" || value === null || Array.isArray(value))
        return [`${where}: expected an object`];
      const obj = value as Record<string, unknown>;
      for (const key of schema.required ?? [])
        if (!(key in obj)) errors.push(`${where}.${key}: required`);
      for (const [key, v] of Object.entries(obj)) {
        const prop = schema.properties?.[key];
        if (!prop) errors.push(`${where}.${key}: not in the API definition`);
        else errors.push(...validate(api, prop, v, `${where}.${key}`));
      }
      break;
    }
    case "string":
      if (typeof value !== "string") errors.push(`${where}: expected a string`);
      break;
    case "integer":
      if (!Number.isInteger(value)) errors.push(`${where}: expected an integer`);
      else if (
        (schema.minimum !== undefined && (value as number) < schema.minimum) ||
        (schema.maximum !== undefined && (value as number) > schema.maximum)
      ) {
        errors.push(`${where}: ${value} out of range`);
      }
      break;
    case "boolean":
      if (typeof value !== "boolean") errors.push(`${where}: expected a boolean`);
      break;
  }
  return errors;
}

/** The swagger path template matching a concrete path (e.g. /drives/{drive_id}). */
function matchPath(api: Swagger, concrete: string): string | undefined {
  return Object.keys(api.paths).find((template) =>
    new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(concrete),
  );
}

const spec: VmSpec = {
  id: "abc123",
  name: "dev",
  vcpu: 2,
  memoryBytes: 1024 ** 3,
  accel: "kvm",
  kernel: {
    vmlinuz: "/k/vmlinuz",
    vmlinux: "/k/vmlinux",
    initrd: "/k/initrd.img",
    cmdline: "console=ttyS0 root=/dev/vda",
  },
  rootDisk: "/v/root.ext4",
  workDisk: "/v/work.ext4",
  dir: "/v",
  network: { mode: "tap", tap: "bg-abc123", mac: "52:54:ab:c1:23:00", ip: "172.30.0.2" },
};

test("every request body the driver sends matches Firecracker's API definition", async () => {
  const api = await loadApi();
  const requests = [
    ...firecrackerRequests(spec),
    { method: "PUT" as const, path: "/actions", body: { action_type: "SendCtrlAltDel" } },
  ];
  assert.deepEqual(
    requests.map((r) => r.path),
    [
      "/logger",
      "/machine-config",
      "/boot-source",
      "/drives/root",
      "/drives/work",
      "/network-interfaces/eth0",
      "/actions",
      "/actions",
    ],
  );
  for (const req of requests) {
    const template = matchPath(api, req.path);
    assert.ok(template, `${req.path} is an API path`);
    const op = api.paths[template!]![req.method.toLowerCase()];
    assert.ok(op, `${req.method} ${template} exists`);
    const bodyParam = op!.parameters?.find((p) => p.in === "body");
    assert.ok(bodyParam?.schema, `${req.method} ${template} takes a body`);
    assert.deepEqual(validate(api, bodyParam!.schema!, req.body, `${req.method} ${req.path}`), []);
  }
});

test("the validator itself catches wrong bodies", async () => {
  const api = await loadApi();
  const schema = { $ref: "#/definitions/MachineConfiguration" };
  assert.deepEqual(validate(api, schema, { vcpu_count: 2, mem_size_mib: 512 }, "mc"), []);
  assert.ok(
    validate(api, schema, { vcpu_count: 2 }, "mc").some((e) =>
      e.includes("mem_size_mib: required"),
    ),
  );
  assert.ok(
    validate(api, schema, { vcpu_count: 2, mem_size_mib: 512, memory: 1 }, "mc").some((e) =>
      e.includes("not in the API"),
    ),
  );
  assert.ok(
    validate(api, schema, { vcpu_count: "2", mem_size_mib: 512 }, "mc").some((e) =>
      e.includes("expected an integer"),
    ),
  );
});

test("the driver refuses what Firecracker cannot do", () => {
  assert.throws(
    () => firecrackerRequests({ ...spec, kernel: { ...spec.kernel, vmlinux: null } }),
    /needs an uncompressed vmlinux/,
  );
  assert.throws(
    () => firecrackerRequests({ ...spec, network: { mode: "user", sshPort: 2222 } }),
    /no user-mode networking/,
  );
});

test("the API client speaks HTTP over the unix socket", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
  const socket = path.join(dir, "api.sock");
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push(`${req.method} ${req.url} ${req.headers["content-type"]} ${body}`);
      res
        .writeHead(req.url === "/bad" ? 400 : 204)
        .end(req.url === "/bad" ? '{"fault_message":"no"}' : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  try {
    assert.equal(
      (
        await apiRequest(socket, {
          method: "PUT",
          path: "/actions",
          body: { action_type: "InstanceStart" },
        })
      ).status,
      204,
    );
    const bad = await apiRequest(socket, { method: "PUT", path: "/bad", body: {} });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /fault_message/);
    assert.deepEqual(seen[0], 'PUT /actions application/json {"action_type":"InstanceStart"}');
  } finally {
    server.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("a Firecracker started again on the same socket path is reached afresh, not over a pooled connection", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
  const socket = path.join(dir, "api.sock");
  const serve = async (state: string) => {
    const server = http.createServer((_req, res) =>
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ state })),
    );
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    return server;
  };
  const describe = { method: "GET" as const, path: "/" };
  try {
    // A VM stopped and started again: a new process listens where the old one did.
    const first = await serve("Running");
    assert.match((await apiRequest(socket, describe)).body, /Running/);
    first.closeAllConnections();
    await new Promise<void>((resolve) => first.close(() => resolve()));
    const second = await serve("Paused");
    try {
      assert.match((await apiRequest(socket, describe)).body, /Paused/);
    } finally {
      second.closeAllConnections();
      await new Promise<void>((resolve) => second.close(() => resolve()));
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test(
  "a frozen Firecracker (a socket that never answers) costs the request's time limit, and no time left means no wait",
  { timeout: 10_000 },
  async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
    const socket = path.join(dir, "api.sock");
    // Accepts and never answers, like a VMM that is SIGSTOPped.
    const held = new Set<net.Socket>();
    const server = net.createServer((s) => {
      held.add(s);
      s.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const req = {
        method: "PUT",
        path: "/actions",
        body: { action_type: "SendCtrlAltDel" },
      } as const;
      await assert.rejects(apiRequest(socket, req, 200), /timed out/);
      // Node treats an http timeout of 0 as none at all: this hung until the test's timeout.
      await assert.rejects(apiRequest(socket, req, 0), /timed out/);
    } finally {
      server.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
);

// The bound covers the wait for the VM lane (test/helpers/vm-lane.ts, at most 20 min while other
// VM files of the run boot theirs) and the boot itself.
test("a real Firecracker binary boots a VM", { timeout: 25 * 60_000 }, async (t) => {
  // Each precondition Firecracker really has, checked in turn; a missing one skips with its reason.
  const runner = createCommandRunner();
  const binary = await runner.which("firecracker");
  if (!binary) {
    t.skip(
      "no firecracker binary on PATH on this machine: the driver was checked against the API definition only",
    );
    return;
  }
  const accel = await detectAccel(realAccelDeps());
  if (accel.kind !== "kvm") {
    t.skip(
      `${binary} is installed, but Firecracker needs KVM and this machine has none: ${accel.reason}`,
    );
    return;
  }
  if (process.getuid?.() !== 0) {
    t.skip(
      `${binary} is installed, but its tap device needs root to create, and this test is not root`,
    );
    return;
  }
  const shared = await sharedDefaultImage(process.env);
  if (!shared) {
    t.skip(
      `${binary} is installed, but no kernel and image to boot: set BANGER_TEST_SHARED to a directory (make test does)`,
    );
    return;
  }
  const kernel = await readKernelDir(shared.kernelDir);
  assert.ok(kernel.vmlinux, `the shared kernel in ${shared.kernelDir} has a vmlinux`);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-boot-"));
  const tap = `bg-fct${randomBytes(3).toString("hex")}`;
  const driver = new FirecrackerDriver(runner);
  let handles: VmHandles | null = null;
  try {
    await runChecked(runner, "ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
    await runChecked(runner, "ip", ["link", "set", tap, "up"]);
    const rootDisk = path.join(dir, "root.ext4");
    await runChecked(runner, "cp", ["--reflink=auto", "--sparse=always", shared.rootfs, rootDisk]);
    const workDisk = path.join(dir, "work.ext4");
    await createWorkDisk({
      file: workDisk,
      sizeBytes: 64 * 1024 * 1024,
      authorizedKey:
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFirecrackerBootTestKeyNotUsedAnywhere0 fc",
      runner,
    });
    handles = await driver.start({
      ...spec,
      accel: "kvm",
      kernel: {
        vmlinuz: kernel.vmlinuz,
        vmlinux: kernel.vmlinux,
        initrd: kernel.initrd,
        cmdline: `${DEFAULT_KERNEL_CMDLINE} root=/dev/vda banger.hostname=fc-boot`,
      },
      rootDisk,
      workDisk,
      dir,
      network: { mode: "tap", tap, mac: "52:54:ab:c1:23:01", ip: "172.30.0.2" },
    });
    assert.equal(await driver.status(handles), "running");
    // The kernel ran, banger's initramfs found the root disk and handed over to the image's init.
    const deadline = Date.now() + 120_000;
    let log = "";
    while (!/Welcome to|login:/.test(log)) {
      assert.doesNotMatch(log, /banger-initramfs: error/);
      assert.equal(await driver.status(handles), "running", `firecracker exited; console:\n${log}`);
      assert.ok(Date.now() < deadline, `the guest never reached its init; console:\n${log}`);
      await new Promise((r) => setTimeout(r, 500));
      log = await fs.readFile(handles.consoleLog, "utf8").catch(() => "");
    }
    assert.match(log, /Linux version/);
    await driver.stop(handles, 30_000);
    assert.equal(await driver.status(handles), "stopped");
  } finally {
    if (handles) await driver.kill(handles).catch(() => undefined);
    await runner.run("ip", ["link", "del", tap]).catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  }
});
