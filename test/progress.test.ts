import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { test } from "node:test";
import { createProgressRenderer } from "../src/cli/progress.js";

/** A terminal stderr of the given width that keeps what is written to it. */
function terminal(columns: number | undefined) {
  const stderr = Object.assign(new PassThrough(), { isTTY: true, columns });
  let text = "";
  stderr.on("data", (c: Buffer) => (text += c.toString()));
  return { out: { stdout: new PassThrough(), stderr }, text: () => text };
}

test("a live progress line fits the terminal, and a terminal of unknown size (0 columns) cuts nothing", () => {
  const narrow = terminal(20);
  const r = createProgressRenderer(narrow.out);
  r.report({ token: "t", stage: "image", message: "building the default image" });
  r.done();
  assert.match(narrow.text(), / … image: building\r/, "cut to 19 characters");
  assert.match(narrow.text(), /✓ image\n$/);

  for (const columns of [0, undefined]) {
    const unsized = terminal(columns);
    const u = createProgressRenderer(unsized.out);
    u.report({ token: "t", stage: "image", message: "building the default image" });
    u.done();
    assert.match(unsized.text(), /… image: building the default image\r/, `columns ${columns}`);
  }
});
