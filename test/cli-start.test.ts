// The CLI loads only the command groups (and libraries) the command being run needs; see
// src/cli/program.ts. Timing lives in bench/cli-start.ts; this file checks what loads.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { completeWords } from "../src/cli/completion.js";
import { buildProgram } from "../src/cli/program.js";
import { referenceDeps } from "../src/cli/reference.js";
import { packagePath, packageRoot } from "../src/paths/package-root.js";
import { ensureBuilt } from "./helpers/build.js";

const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));

const names = async (args: string[]) =>
  (await buildProgram(referenceDeps(), args)).commands.map((c) => c.name());

test("a command line loads only the group it runs", async () => {
  assert.deepEqual(await names(["vm", "ls"]), ["vm"]);
  assert.deepEqual(await names(["image", "pull", "alpine"]), ["image"]);
  assert.deepEqual(await names(["internal", "--help"]), ["internal"]);
  assert.deepEqual(await names(["__complete", "--", "vm", "show", ""]), [
    "vm",
    "__complete",
    "completion",
  ]);
});

test("help, no command, a typo and completing a group's name load every group", async () => {
  const all = await names([]);
  assert.ok(all.includes("vm") && all.includes("internal") && all.includes("__complete"));
  for (const args of [["--help"], ["help", "vm"], ["vmm", "ls"], ["__complete", "--", "v"]]) {
    assert.deepEqual(await names(args), all, args.join(" "));
  }
});

test("each top-level command is built when its name is the first word", async () => {
  for (const name of await names([])) {
    assert.ok((await names([name, "--help"])).includes(name), name);
  }
});

test("completion answers the same from the partly loaded tree as from the whole", async () => {
  const deps = referenceDeps();
  const whole = await buildProgram(deps);
  for (const words of [
    ["vm", ""],
    ["vm", "st"],
    ["vm", "ls", "--"],
    ["vm", "workspace", ""],
    ["image", "cache", ""],
    ["kernel", "list", "--a"],
    ["completion", ""],
    ["system", "install", "--"],
  ]) {
    const partial = await buildProgram(deps, ["__complete", "--", ...words]);
    assert.deepEqual(
      await completeWords(partial, words, deps),
      await completeWords(whole, words, deps),
      words.join(" "),
    );
  }
});

/** The modules `banger <args>` loads, run from source under tsx in a home where no daemon runs. */
async function modulesLoaded(args: string[]): Promise<string[]> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-cli-start-"));
  try {
    // Records every module the ESM loader loads (packages are seen at their entry point).
    const hook = path.join(dir, "hook.mjs");
    await fs.writeFile(
      hook,
      `import { register } from "node:module";
register("data:text/javascript," + encodeURIComponent(
  "export async function load(url, context, next) { process.stderr.write('LOADED ' + url + '\\\\n'); return next(url, context); }"));
`,
    );
    const { stderr } = await run(
      process.execPath,
      [
        "--import",
        "tsx",
        "--import",
        hook,
        "-e",
        `import(${JSON.stringify(path.join(root, "src/cli/main.ts"))}).then((m) => m.main())`,
        "banger",
        ...args,
      ],
      { cwd: root, env: { ...process.env, BANGER_HOME: dir }, timeout: 60_000 },
    );
    return stderr
      .split("\n")
      .filter((l) => l.startsWith("LOADED "))
      .map((l) => l.slice("LOADED ".length));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// Libraries and folders no start-up needs (image/limits.ts is a table of numbers the config reads).
const HEAVY =
  /\/node_modules\/(zod|tar-stream|better-sqlite3|zstd-napi|pino)\/|\/src\/(api\/methods|image\/(?!limits)|kernel|store|daemon|net|disk)[./]/;

test("completing a VM name loads neither the API schemas nor image, store or daemon code", async () => {
  // No daemon runs in that home: completion asks none and starts none.
  const loaded = await modulesLoaded(["__complete", "--", "vm", "show", ""]);
  assert.ok(
    loaded.some((u) => u.endsWith("/src/cli/client.ts")),
    "it looked for a daemon",
  );
  assert.deepEqual(
    loaded.filter((u) => HEAVY.test(u)),
    [],
  );
});

test("the whole command tree (completing a group's name) loads no heavy library and no RPC client", async () => {
  const loaded = await modulesLoaded(["__complete", "--", ""]);
  assert.ok(
    loaded.some((u) => u.endsWith("/src/cli/internal.ts")),
    "every group was loaded",
  );
  assert.deepEqual(
    loaded.filter((u) => HEAVY.test(u) || /vscode-jsonrpc|\/src\/cli\/client\.ts/.test(u)),
    [],
  );
});

test("packageRoot is the folder holding banger's package.json", async () => {
  const pkg = JSON.parse(await fs.readFile(packagePath("package.json"), "utf8")) as {
    name: string;
  };
  assert.equal(pkg.name, "banger");
  assert.equal(packageRoot(), root);
});

test("bin/banger answers --version before loading the CLI, as the CLI itself would", async () => {
  await ensureBuilt(root);
  const bin = path.join(root, "bin", "banger");
  const pkg = JSON.parse(await fs.readFile(packagePath("package.json"), "utf8")) as {
    version: string;
  };
  for (const flag of ["--version", "-V"]) {
    assert.equal((await run(bin, [flag])).stdout, `${pkg.version}\n`);
    // With another word it is the CLI (commander) that answers.
    assert.equal((await run(bin, [flag, "vm"])).stdout, `${pkg.version}\n`);
  }
});

test("the build leaves a code cache V8 accepts for the CLI bundle", async () => {
  await ensureBuilt(root);
  const require = createRequire(import.meta.url);
  const launcher = require(path.join(root, "bin", "banger")) as {
    loadBundle(): { exports: { main: unknown }; script: { cachedDataRejected?: boolean } };
  };
  const { exports, script } = launcher.loadBundle();
  assert.equal(typeof exports.main, "function");
  assert.equal(script.cachedDataRejected, false);
});

test("bin/banger runs the bundle, or the compiled modules when a bare tsc made them newer", async () => {
  // A copy of the launcher with stand-ins for what the build writes, so dist/ is left alone.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-launcher-"));
  try {
    await fs.mkdir(path.join(dir, "bin"));
    await fs.mkdir(path.join(dir, "dist", "cli"), { recursive: true });
    for (const file of ["banger", "package.json"])
      await fs.copyFile(path.join(root, "bin", file), path.join(dir, "bin", file));
    await fs.writeFile(path.join(dir, "package.json"), '{ "type": "module", "version": "1.2.3" }');
    const bin = path.join(dir, "bin", "banger");
    const launch = () => run(bin, ["vm", "ls"]).then((r) => r.stdout);

    await assert.rejects(run(bin, ["vm", "ls"]), /not built yet: run 'make build'/);
    const modules = path.join(dir, "dist", "cli", "main.js");
    const bundle = path.join(dir, "dist", "cli", "banger.cjs");
    await fs.writeFile(modules, 'export async function main() { console.log("modules"); }\n');
    assert.equal(await launch(), "modules\n");
    await fs.writeFile(bundle, 'exports.main = async () => console.log("bundle");\n');
    assert.equal(await launch(), "bundle\n");
    const later = new Date(Date.now() + 60_000);
    await fs.utimes(modules, later, later);
    assert.equal(await launch(), "modules\n");
    assert.equal((await run(bin, ["--version"])).stdout, "1.2.3\n");
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
