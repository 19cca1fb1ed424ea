import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY_CONFIG, recheckImageConfig } from "../src/image/image-config.js";

// A catalog bundle's manifest.json carries a config summary that zod only shapes: pull puts it
// through the rules an OCI config gets (src/image/pull.ts), so a bundle cannot smuggle past them.
test("a bundle's kept config is checked again: what the rules drop is dropped and named", () => {
  const checked = recheckImageConfig(
    {
      ...EMPTY_CONFIG,
      env: ["OK=1", "UID=0", "$(reboot)=x", "NL=a\nb"],
      workingDir: '/srv/a"b',
      exposedPorts: ["80/tcp", "eighty"],
      cmd: ["sh"],
      warnings: ["from the bundle"],
    },
    "the config in the bundle of tiny",
  );
  assert.deepEqual(checked.env, ["OK=1"]);
  assert.equal(checked.workingDir, null);
  assert.deepEqual(checked.exposedPorts, ["80/tcp"]);
  assert.deepEqual(checked.cmd, ["sh"]);
  assert.equal(checked.warnings[0], "from the bundle");
  assert.equal(checked.warnings.length, 6, checked.warnings.join("\n"));

  const fine = { ...EMPTY_CONFIG, env: ["A=1"], workingDir: "/app", warnings: [] };
  assert.deepEqual(recheckImageConfig(fine, "x"), fine);
  assert.throws(
    () =>
      recheckImageConfig(
        { ...EMPTY_CONFIG, warnings: Array.from({ length: 100 }, () => "w".repeat(1000)) },
        "the config in the bundle of big",
      ),
    /the config in the bundle of big: .* more than 65536/,
  );
});
