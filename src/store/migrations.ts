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
];
