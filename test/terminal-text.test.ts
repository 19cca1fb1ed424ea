import assert from "node:assert/strict";
import { test } from "node:test";
import { ExportStreamParser } from "../src/cli/workspace-export.js";
import { formatFields, formatTable } from "../src/cli/output.js";
import { tailLines, visible, visibleLines } from "../src/util/terminal-text.js";

// Every C0, DEL and C1 code point: none may reach a terminal as itself.
const CONTROLS = [
  ...Array.from({ length: 0x20 }, (_, i) => i),
  ...Array.from({ length: 0x21 }, (_, i) => 0x7f + i),
].map((c) => String.fromCharCode(c));

test("visible escapes every control character, visibleLines keeps newlines and tabs", () => {
  for (const c of CONTROLS) {
    assert.doesNotMatch(visible(`a${c}b`), /[\x00-\x1f\x7f-\x9f]/, `U+${c.charCodeAt(0)}`);
    if (c !== "\n" && c !== "\t")
      assert.doesNotMatch(visibleLines(`a${c}b`), /[\x00-\x1f\x7f-\x9f]/);
  }
  const osc52 = "\x1b]52;c;ZWNobyBoaQ==\x07";
  assert.equal(visible(osc52), "\\x1b]52;c;ZWNobyBoaQ==\\x07");
  assert.equal(visible("\x9b2J"), "\\x9b2J");
  assert.equal(visible("a\nb\tc\rd\0"), "a\\nb\\tc\\rd\\x00");
  assert.equal(visibleLines("a\nb\tc\rd"), "a\nb\tc\\rd");
  assert.equal(visible("evil\u202etxt.exe"), "evil\\u202etxt.exe");
  assert.equal(visible("héllo ✓ 日本"), "héllo ✓ 日本");
});

test("tables and fields show guest text escaped, columns measured on what is shown", () => {
  const table = formatTable(["NAME", "CMD"], [["\x1b[2Jx", "a\nb"]]);
  assert.equal(table, "NAME       CMD\n\\x1b[2Jx   a\\nb\n");
  assert.equal(formatFields([["command", "\x1b]0;pwned\x07"]]), "command: \\x1b]0;pwned\\x07\n");
});

test("tailLines bounds what an error quotes", () => {
  assert.equal(tailLines("1\n2\n3\n4\n5\n6\n7\n"), "3\n4\n5\n6\n7");
  const long = tailLines("x".repeat(1_000_000));
  assert.equal(long.length, 2003);
});

test("the export stream parser splits header and body, in any chunking", () => {
  const stream = Buffer.from("/root/repo\nabc123\ndiff --git a/x b/x\n\x00\xff");
  for (const size of [1, 3, 7, stream.length]) {
    const p = new ExportStreamParser("dev", false);
    const out: Buffer[] = [];
    for (let i = 0; i < stream.length; i += size)
      for (const piece of p.feed(stream.subarray(i, i + size))) out.push(Buffer.from(piece));
    p.end();
    assert.deepEqual(p.header, { dir: "/root/repo", base: "abc123" });
    assert.deepEqual(Buffer.concat(out), Buffer.from("diff --git a/x b/x\n\x00\xff"));
  }
});

test("name-only names come out one per line, escaped; malformed streams are clear errors", () => {
  const p = new ExportStreamParser("dev", true);
  const out = [
    ...p.feed(Buffer.from("/root/r\nbase\na\x00\x1b]52;c;eA==\x07\x00new\nline")),
    ...p.end(),
  ];
  assert.deepEqual(out, ["a\n", "\\x1b]52;c;eA==\\x07\n", "new\\nline\n"]);

  const noHeader = new ExportStreamParser("dev", false);
  assert.throws(
    () => noHeader.feed(Buffer.alloc(70_000, 0x41)),
    /export output of VM dev is malformed/,
  );
  assert.throws(() => new ExportStreamParser("dev", false).end(), /malformed/);
  const longName = new ExportStreamParser("dev", true);
  longName.feed(Buffer.from("/r\nb\n"));
  assert.throws(() => longName.feed(Buffer.alloc(70_000, 0x41)), /longer than 65536 bytes/);
});
