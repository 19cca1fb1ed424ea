import assert from "node:assert/strict";
import { test } from "node:test";
import { defaultConfig } from "../src/config/config.js";
import {
  BUILTIN_VM_DEFAULTS,
  describeVmDefaults,
  resolveVmDefaults,
} from "../src/config/vm-defaults.js";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

test("a big host: auto values, capped at 4 vcpu and 8 GiB", () => {
  const d = resolveVmDefaults(defaultConfig(), { cpus: 64, memoryBytes: 256 * GiB });
  assert.deepEqual(d.vcpu, { value: 4, source: "auto" });
  assert.deepEqual(d.memoryBytes, { value: 8 * GiB, source: "auto" });
  assert.deepEqual(d.diskBytes, { value: 8 * GiB, source: "builtin" });
});

test("a mid host: a quarter of the CPUs and an eighth of RAM, rounded to MiB", () => {
  const d = resolveVmDefaults(defaultConfig(), { cpus: 8, memoryBytes: 16 * GiB + 12345 });
  assert.deepEqual(d.vcpu, { value: 2, source: "auto" });
  assert.equal(d.memoryBytes.value, 2 * GiB);
  assert.equal(d.memoryBytes.value % MiB, 0);
});

test("a small host falls back to the built-in floor", () => {
  const d = resolveVmDefaults(defaultConfig(), { cpus: 2, memoryBytes: 2 * GiB });
  assert.deepEqual(d.vcpu, { value: BUILTIN_VM_DEFAULTS.vcpu, source: "builtin" });
  assert.deepEqual(d.memoryBytes, { value: BUILTIN_VM_DEFAULTS.memoryBytes, source: "builtin" });
});

test("config wins over everything", () => {
  const config = defaultConfig();
  config.vmDefaults = { vcpu: 3, memoryBytes: 3 * GiB, diskBytes: 20 * GiB };
  const d = resolveVmDefaults(config, { cpus: 64, memoryBytes: 256 * GiB });
  assert.deepEqual(d.vcpu, { value: 3, source: "config" });
  assert.deepEqual(d.memoryBytes, { value: 3 * GiB, source: "config" });
  assert.deepEqual(d.diskBytes, { value: 20 * GiB, source: "config" });
});

test("each layer applies per value", () => {
  const config = defaultConfig();
  config.vmDefaults.memoryBytes = 1 * GiB;
  const d = resolveVmDefaults(config, { cpus: 16, memoryBytes: 1 * GiB });
  assert.equal(d.vcpu.source, "auto");
  assert.equal(d.memoryBytes.source, "config");
  assert.equal(d.diskBytes.source, "builtin");
  assert.equal(
    describeVmDefaults(d),
    "vcpu 4 (auto) · memory 1 GiB (config) · disk 8 GiB (builtin)",
  );
});
