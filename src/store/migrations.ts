/**
 * Numbered schema migrations, applied in order at start-up, each in its own
 * transaction. Never edit a migration that has shipped: add a new one.
 */
export interface Migration {
  version: number;
  name: string;
  up: string;
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: "kernels_and_images",
    up: `
      CREATE TABLE kernels (
        name        TEXT PRIMARY KEY,
        version     TEXT,
        source      TEXT,
        dir         TEXT NOT NULL,
        sha256      TEXT,
        created_at  TEXT NOT NULL
      );
      CREATE TABLE images (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL UNIQUE,
        kernel_ref   TEXT,
        rootfs_path  TEXT NOT NULL,
        source       TEXT,
        digest       TEXT,
        size_bytes   INTEGER,
        managed      INTEGER NOT NULL DEFAULT 1,
        created_at   TEXT NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: "vms",
    up: `
      CREATE TABLE vms (
        id             TEXT PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        image_id       TEXT REFERENCES images(id),
        kernel_ref     TEXT,
        vcpu           INTEGER NOT NULL,
        memory_bytes   INTEGER NOT NULL,
        disk_bytes     INTEGER NOT NULL,
        state          TEXT NOT NULL DEFAULT 'created'
                       CHECK (state IN ('created', 'running', 'stopped', 'error')),
        nat            INTEGER NOT NULL DEFAULT 0,
        ip             TEXT,
        mac            TEXT,
        vmm            TEXT,
        -- Last persisted teardown identity (pid, tap, sockets): used when handles.json is lost.
        teardown_json  TEXT,
        created_at     TEXT NOT NULL,
        updated_at     TEXT NOT NULL
      );
      CREATE INDEX vms_image ON vms(image_id);
    `,
  },
  {
    version: 3,
    name: "image_init",
    // The init picked when the image was finalised (banger.init=); NULL: /sbin/init, as before.
    up: `ALTER TABLE images ADD COLUMN init TEXT;`,
  },
  {
    version: 4,
    name: "image_config",
    // The image's OCI config as kept at pull or import (ImageConfig, JSON); NULL: none (built, older).
    up: `ALTER TABLE images ADD COLUMN config_json TEXT;`,
  },
  {
    version: 5,
    name: "snapshots",
    // Saved VM states (src/snapshot/), and the snapshot a clone's disks sit on (NULL: none).
    // kernel_fingerprint changes when the kernel's files do (a re-pull or re-derive under the same
    // name): a restore refuses a state saved under other kernel files. shape_key: boot snapshots only.
    up: `
      CREATE TABLE snapshots (
        id                  TEXT PRIMARY KEY,
        name                TEXT NOT NULL UNIQUE,
        kind                TEXT NOT NULL CHECK (kind IN ('user', 'boot')),
        source_vm           TEXT,
        image_id            TEXT NOT NULL REFERENCES images(id),
        kernel_ref          TEXT NOT NULL,
        kernel_fingerprint  TEXT NOT NULL,
        vmm                 TEXT NOT NULL,
        vmm_version         TEXT NOT NULL,
        accel               TEXT NOT NULL CHECK (accel IN ('kvm', 'tcg')),
        vcpu                INTEGER NOT NULL,
        memory_bytes        INTEGER NOT NULL,
        disk_bytes          INTEGER NOT NULL,
        shape_key           TEXT UNIQUE,
        bytes               INTEGER NOT NULL,
        created_at          TEXT NOT NULL
      );
      ALTER TABLE vms ADD COLUMN snapshot_id TEXT REFERENCES snapshots(id);
      CREATE INDEX vms_snapshot ON vms(snapshot_id);
    `,
  },
];
