#!/bin/sh
# The one build (make build, and tests through test/helpers/build.ts): tsc compiles src/ to dist/
# (the daemon, the helper and the library run from there), then esbuild bundles the CLI into one
# file, dist/cli/banger.cjs, which bin/banger runs. A CLI called hundreds of times per task spent
# most of its start-up resolving and loading some two hundred separate ES modules.
set -eu
cd "$(dirname "$0")/.."
npx tsc -p tsconfig.json
# CommonJS starts without Node's ES module loader. The command groups the CLI imports lazily stay
# lazy: esbuild runs a module's body only when its import() runs. Left out, and loaded from
# node_modules only where used: native addons (they cannot be bundled), zod (over half the size;
# the CLI reads no schema) and tar-stream (bundle making). The bundle sits two levels below the
# package root like every dist/<folder>/ file, so paths/package-root.ts works from it too.
npx esbuild src/cli/main.ts --bundle --format=cjs --platform=node --target=node20 \
  --outfile=dist/cli/banger.cjs --sourcemap --log-level=warning \
  --external:better-sqlite3 --external:zstd-napi --external:zod --external:tar-stream \
  --define:import.meta.url=bangerModuleUrl \
  '--banner:js=const bangerModuleUrl = require("node:url").pathToFileURL(__filename).href;'
node scripts/cli-code-cache.cjs
date > dist/.build-stamp
