import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import type { ImageService } from "../src/image/service.js";
import { imageServices, noOci } from "./helpers/services.js";

// Builds the real default image once (mmdebstrap from Debian's repositories) and reads it back with debugfs.
const runner = createCommandRunner();
let home: TempLayout;
let store: Store;
let images: ImageService;

before(async () => {
  home = await tempLayout("banger-ibuild-");
  store = Store.open(home.layout.dbFile);
  ({ images } = imageServices(store, home.layout, { runner, oci: noOci }));
});

after(async () => {
  store.close();
  await home.cleanup();
});

test("the default image builds locally with mmdebstrap and boots-ready files are in place", async () => {
  const stages = new Set<string>();
  const info = await images.ensure("debian-bookworm", (p) => stages.add(p.stage));
  for (const stage of ["image", "bootstrap", "flatten", "guest assets", "ext4"])
    assert.ok(stages.has(stage), `stage ${stage}`);
  assert.equal(info.name, "debian-bookworm");
  assert.equal(info.kernel, "debian-cloud");
  assert.equal(info.managed, true);
  assert.match(info.source ?? "", /^mmdebstrap:bookworm$/);
  const dir = path.dirname(info.rootfsPath);
  assert.deepEqual((await fs.readdir(dir)).sort(), ["manifest.json", "rootfs.ext4"]);
  assert.deepEqual(
    (await fs.readdir(home.layout.imagesDir)).filter((f) => f.includes("staging")),
    [],
    "no staging dir left",
  );

  const rootfs = info.rootfsPath;
  for (const file of [
    "/usr/sbin/sshd",
    "/usr/bin/git",
    "/usr/bin/curl",
    "/usr/bin/sudo",
    "/sbin/init",
    "/usr/sbin/ip",
  ]) {
    assert.ok(await statInImage(runner, rootfs, file), `${file} is in the image`);
  }
  const sudo = await statInImage(runner, rootfs, "/usr/bin/sudo");
  assert.deepEqual([sudo?.uid, sudo?.gid, sudo?.mode], [0, 0, 0o4755]);
  const shadow = await statInImage(runner, rootfs, "/etc/shadow");
  assert.equal(shadow?.gid, 42, "group shadow kept from the tarball");
  assert.match(
    (await catInImage(runner, rootfs, "/etc/ssh/sshd_config.d/banger.conf")) ?? "",
    /PermitRootLogin prohibit-password/,
  );
  assert.match((await catInImage(runner, rootfs, "/etc/fstab")) ?? "", /\/dev\/vdb \/root ext4/);
  assert.equal(
    await statInImage(runner, rootfs, "/usr/share/man/man1/git.1.gz"),
    null,
    "man pages excluded",
  );

  // A second ensure reuses it; a second build under the same name is refused.
  assert.equal((await images.ensure("debian-bookworm")).id, info.id);
  await assert.rejects(images.build({ name: "debian-bookworm" }), /already exists/);
});
