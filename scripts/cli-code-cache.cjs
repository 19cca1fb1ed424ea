// Writes V8's code cache for the CLI bundle (dist/cli/banger.cjs.cache), which bin/banger reads
// to skip most of the bundle's compile time. The cache holds what was compiled when it was made,
// so this first runs what most commands run: building the command tree (all of it, then one group
// with the client looking for a daemon) and parsing. (Not --help: commander exits the process
// after help.) Run by scripts/build.sh after bundling.
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { loadBundle, codeCache } = require("../bin/banger");

async function main() {
  // A home with no daemon: completion asks none and starts none.
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "banger-code-cache-"));
  const write = process.stdout.write;
  try {
    process.env.BANGER_HOME = home;
    delete process.env.XDG_RUNTIME_DIR;
    const { exports, script } = loadBundle({ useCache: false });
    process.stdout.write = () => true;
    for (const args of [
      ["__complete", "--", ""],
      ["__complete", "--", "vm", "show", ""],
    ]) {
      process.argv = [process.execPath, "banger", ...args];
      await exports.main();
    }
    process.exitCode = 0;
    fs.writeFileSync(`${codeCache}.tmp`, script.createCachedData());
    fs.renameSync(`${codeCache}.tmp`, codeCache);
  } finally {
    process.stdout.write = write;
    fs.rmSync(home, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`cli-code-cache: ${err.stack ?? err}\n`);
  process.exitCode = 1;
});
