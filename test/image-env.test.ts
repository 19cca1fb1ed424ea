import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import type { ImageConfig } from "../src/api/methods.js";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { remoteCommand } from "../src/guest/image-env.js";
import { GUEST_SCRIPTS_DIR } from "../src/guest/scripts.js";
import { EMPTY_CONFIG } from "../src/image/image-config.js";
import { finaliseImage } from "../src/image/finalise.js";
import { createCommandRunner } from "../src/system/runner.js";
import { makeLayer } from "./helpers/layer.js";

// The image's Env and WorkingDir: what finalisation writes into the image, and what
// image-env.sh and the user command make of it, run under a static busybox in a chroot.
const run = promisify(execFile);
const runner = createCommandRunner();
const FOO = "a b;$(touch /pwned)`touch /pwned`'\"*";
const config: ImageConfig = {
  ...EMPTY_CONFIG,
  env: ["PATH=/opt/tool/bin:/bin", `FOO=${FOO}`],
  workingDir: "/srv/app",
};
let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-imgenv-"));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function finalise(
  cfg: ImageConfig | null,
  extra: Array<{ name: string; body: string }> = [],
) {
  const staging = await fs.mkdtemp(path.join(dir, "staging-"));
  const layer = path.join(staging, "layer.tar");
  await fs.writeFile(
    layer,
    await makeLayer([{ name: "etc/os-release", body: "ID=x\n" }, ...extra]),
  );
  return finaliseImage({ layers: [layer], stagingDir: staging, runner, config: cfg });
}

test("finalisation writes the Env and WorkingDir as data, a profile.d hook, and makes the WorkingDir", async () => {
  const { rootfs } = await finalise(config);
  assert.equal(
    await catInImage(runner, rootfs, "/usr/lib/banger/image.env"),
    `PATH=/opt/tool/bin:/bin\nFOO=${FOO}\n`,
  );
  assert.equal(await catInImage(runner, rootfs, "/usr/lib/banger/image.workdir"), "/srv/app\n");
  assert.match(
    (await catInImage(runner, rootfs, "/etc/profile.d/banger-image-env.sh")) ?? "",
    /\. \/usr\/lib\/banger\/image-env\.sh/,
  );
  const app = await statInImage(runner, rootfs, "/srv/app");
  assert.deepEqual([app?.uid, app?.mode], [0, 0o755], "the missing WorkingDir is made");
  // No /etc/profile (busybox, scratch images): one that reads profile.d, so login shells get it.
  assert.equal(
    await catInImage(runner, rootfs, "/etc/profile"),
    await fs.readFile(path.join(GUEST_SCRIPTS_DIR, "profile.sh"), "utf8"),
  );
  const own = await finalise(config, [{ name: "etc/profile", body: "# the image's own\n" }]);
  assert.equal(await catInImage(runner, own.rootfs, "/etc/profile"), "# the image's own\n");

  const none = await finalise(null);
  assert.ok(await statInImage(runner, none.rootfs, "/usr/lib/banger/image-env.sh"));
  for (const f of ["/usr/lib/banger/image.env", "/usr/lib/banger/image.workdir"])
    assert.equal(await statInImage(runner, none.rootfs, f), null, `${f} without a config`);
  assert.equal(await statInImage(runner, none.rootfs, "/etc/profile.d/banger-image-env.sh"), null);
  assert.equal(await statInImage(runner, none.rootfs, "/etc/profile"), null);
});

/** A root holding a static busybox, banger's image-env.sh and the files finalisation writes. */
async function guestRoot(withConfig: boolean): Promise<string> {
  const root = await fs.mkdtemp(path.join(dir, "root-"));
  for (const d of ["bin", "dev", "opt/tool/bin", "usr/lib/banger", "srv/app", "root", "tmp"])
    await fs.mkdir(path.join(root, d), { recursive: true });
  await fs.writeFile(path.join(root, "dev/null"), ""); // a file will do for redirections
  await fs.copyFile("/bin/busybox", path.join(root, "bin/busybox"));
  await fs.chmod(path.join(root, "bin/busybox"), 0o755);
  // Debian's busybox runs only the applets it finds on PATH.
  for (const a of ["sh", "printf", "pwd", "touch", "echo", "mkdir"])
    await fs.symlink("busybox", path.join(root, "bin", a));
  await fs.writeFile(path.join(root, "opt/tool/bin/hello"), "#!/bin/sh\necho hello\n", {
    mode: 0o755,
  });
  await fs.copyFile(
    path.join(GUEST_SCRIPTS_DIR, "image-env.sh"),
    path.join(root, "usr/lib/banger/image-env.sh"),
  );
  if (withConfig) {
    await fs.writeFile(path.join(root, "usr/lib/banger/image.env"), config.env.join("\n") + "\n");
    await fs.writeFile(path.join(root, "usr/lib/banger/image.workdir"), "/srv/app\n");
  }
  return root;
}

async function inRoot(root: string, script: string, env: Record<string, string> = {}) {
  const { stdout } = await run("/usr/sbin/chroot", [root, "/bin/busybox", "sh", "-c", script], {
    env: { PATH: "/bin", HOME: "/root", ...env },
  });
  return stdout;
}

const rootOnly = { skip: process.getuid?.() !== 0 ? "chroot needs root" : false };

test(
  "a user command gets the image's PATH, values literally and its WorkingDir; a workspace wins",
  rootOnly,
  async () => {
    const root = await guestRoot(true);
    const probe = ["sh", "-c", 'hello; printf "%s\\n" "$FOO" "$PATH"; pwd'];
    assert.equal(
      await inRoot(root, remoteCommand(null, probe)),
      `hello\n${FOO}\n/opt/tool/bin:/bin:/usr/lib/banger/bin\n/srv/app\n`,
    );
    await assert.rejects(fs.stat(path.join(root, "pwned")), "no value was evaluated");
    // A workspace (vm run ./repo) runs in the workspace, with the image's env still applied.
    assert.equal(
      await inRoot(root, remoteCommand("/tmp", ["sh", "-c", "hello; pwd"])),
      "hello\n/tmp\n",
    );

    // A login shell's profile hook: the image's env, and its WorkingDir when it starts at home.
    await fs.mkdir(path.join(root, "etc/profile.d"), { recursive: true });
    await fs.copyFile(
      path.join(GUEST_SCRIPTS_DIR, "image-profile.sh"),
      path.join(root, "etc/profile.d/banger-image-env.sh"),
    );
    const login = (from: string) =>
      inRoot(root, `cd ${from} && . /etc/profile.d/banger-image-env.sh && hello && pwd`);
    assert.equal(await login("/root"), "hello\n/srv/app\n");
    assert.equal(await login("/tmp"), "hello\n/tmp\n", "a shell started elsewhere stays there");

    // An image without a WorkingDir: where the SSH server started it (the user's home), as
    // before, and PATH untouched. (chroot starts in /: `cd` stands for the SSH server.)
    const plain = await guestRoot(false);
    assert.equal(
      await inRoot(
        plain,
        `cd /tmp && ${remoteCommand(null, ["sh", "-c", 'printf "%s\\n" "$PATH"; pwd'])}`,
        {
          HOME: "/tmp",
        },
      ),
      "/bin\n/tmp\n",
    );
  },
);

test(
  "a WorkingDir missing at run time (hidden by the work disk on /root) is made and used",
  rootOnly,
  async () => {
    const root = await guestRoot(true);
    await fs.writeFile(path.join(root, "usr/lib/banger/image.workdir"), "/root/app\n");
    assert.equal(await inRoot(root, remoteCommand(null, ["pwd"])), "/root/app\n");
    await fs.rm(path.join(root, "root/app"), { recursive: true });
    await fs.mkdir(path.join(root, "etc/profile.d"), { recursive: true });
    await fs.copyFile(
      path.join(GUEST_SCRIPTS_DIR, "image-profile.sh"),
      path.join(root, "etc/profile.d/banger-image-env.sh"),
    );
    await fs.copyFile(path.join(GUEST_SCRIPTS_DIR, "profile.sh"), path.join(root, "etc/profile"));
    // A login shell of an image whose profile finalisation wrote: profile.d, then the WorkingDir.
    assert.equal(
      await inRoot(root, "cd /root && . /etc/profile && hello && pwd"),
      "hello\n/root/app\n",
    );
  },
);

test("vm run's login shell is the SSH server's, not the image's Env SHELL", rootOnly, async () => {
  const root = await guestRoot(true);
  await fs.appendFile(path.join(root, "usr/lib/banger/image.env"), "SHELL=/bin/zsh\n");
  await fs.writeFile(path.join(root, "bin/login-sh"), '#!/bin/sh\necho "login $1 $SHELL"\n', {
    mode: 0o755,
  });
  assert.equal(
    await inRoot(root, remoteCommand(null, []), { SHELL: "/bin/login-sh" }),
    "login -l /bin/zsh\n",
  );
});

// image-env.sh in the shells /bin/sh is: dash, busybox ash and bash in POSIX mode (Fedora, RHEL),
// where exporting a read-only name (UID) is a fatal error for the shell that sources it.
test("an Env name the shell refuses does not end the shell sourcing image-env.sh", async () => {
  const root = await fs.mkdtemp(path.join(dir, "shells-"));
  await fs.writeFile(path.join(root, "image.env"), "A=1\nUID=1000\nEUID=0\nB=two words\n");
  const script = (await fs.readFile(path.join(GUEST_SCRIPTS_DIR, "image-env.sh"), "utf8"))
    .replaceAll("/usr/lib/banger/image.env", path.join(root, "image.env"))
    .replaceAll("/usr/lib/banger/image.workdir", path.join(root, "image.workdir"));
  await fs.writeFile(path.join(root, "image-env.sh"), script);
  for (const shell of [["dash"], ["busybox", "sh"], ["bash", "--posix"]]) {
    const { stdout } = await run(
      shell[0]!,
      [...shell.slice(1), "-c", `. ${root}/image-env.sh; echo "after: $A $B"`],
      { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: root } },
    );
    assert.equal(stdout, "after: 1 two words\n", shell.join(" "));
  }
});
