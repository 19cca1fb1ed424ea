import type { VmRow } from "../../src/store/store.js";

/** A VM row for tests that insert one by hand: a small QEMU VM, overridden where the test cares. */
export function vmRow(fields: Partial<VmRow> & Pick<VmRow, "name">): VmRow {
  const now = new Date().toISOString();
  return {
    id: "0123456789ab",
    imageId: null,
    kernelRef: "debian-cloud",
    vcpu: 1,
    memoryBytes: 2 ** 30,
    diskBytes: 2 ** 30,
    state: "created",
    nat: false,
    ip: null,
    mac: null,
    vmm: "qemu",
    teardownJson: null,
    snapshotId: null,
    createdAt: now,
    updatedAt: now,
    ...fields,
  };
}
