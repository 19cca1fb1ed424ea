import assert from "node:assert/strict";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { formatSizeBytes, formatSizeShort, parseSize } from "../src/util/size.js";

const KiB = 1024;
const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const TiB = 1024 ** 4;

const parseCases: Array<[string, number]> = [
  ["1K", KiB],
  ["1k", KiB],
  ["1KiB", KiB],
  ["1kib", KiB],
  ["1KB", KiB],
  ["1kb", KiB],
  ["512M", 512 * MiB],
  ["512MiB", 512 * MiB],
  ["512mb", 512 * MiB],
  ["8G", 8 * GiB],
  ["8g", 8 * GiB],
  ["8GiB", 8 * GiB],
  ["8GB", 8 * GiB],
  ["1T", TiB],
  ["1tib", TiB],
  ["2048", 2 * GiB],
  ["1", MiB],
  ["1.5G", 1.5 * GiB],
  ["0.5K", 512],
  ["0.5", 512 * KiB],
  [" 4G ", 4 * GiB],
  ["4 G", 4 * GiB],
  ["10.25M", 10.25 * MiB],
];

for (const [input, bytes] of parseCases) {
  test(`parseSize(${JSON.stringify(input)}) = ${bytes}`, () => {
    assert.equal(parseSize(input), bytes);
  });
}

const errorCases: Array<[string, RegExp]> = [
  ["", /it is empty/],
  ["   ", /it is empty/],
  ["abc", /not a size/],
  ["G", /not a size/],
  ["1.5.5G", /not a size/],
  ["-1G", /cannot be negative/],
  ["-5", /cannot be negative/],
  ["0", /greater than zero/],
  ["0G", /greater than zero/],
  ["12B", /unit K, M, G or T before B/],
  ["8X", /not a size/],
  ["8 GiBs", /not a size/],
  ["99999999999T", /too large/],
  ["1e3G", /not a size/],
];

for (const [input, pattern] of errorCases) {
  test(`parseSize(${JSON.stringify(input)}) fails clearly`, () => {
    assert.throws(
      () => parseSize(input),
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.InvalidParams &&
        pattern.test(err.message) &&
        err.message.includes(`"${input}"`) &&
        /bare number means MiB/.test(err.hint ?? ""),
    );
  });
}

test("formatSizeBytes picks the largest unit with at most one decimal", () => {
  assert.equal(formatSizeBytes(0), "0 B");
  assert.equal(formatSizeBytes(512), "512 B");
  assert.equal(formatSizeBytes(1536), "1.5 KiB");
  assert.equal(formatSizeBytes(2 * GiB), "2 GiB");
  assert.equal(formatSizeBytes(1.2 * GiB), "1.2 GiB");
  assert.equal(formatSizeBytes(1024 * KiB - 1), "1 MiB");
  assert.equal(formatSizeBytes(3 * TiB), "3 TiB");
});

test("formatSizeShort round-trips through parseSize", () => {
  for (const bytes of [
    KiB,
    3 * KiB,
    512 * MiB,
    2048 * MiB,
    8 * GiB,
    1536 * MiB,
    2 * TiB,
    5 * MiB + 4 * KiB,
  ]) {
    assert.equal(parseSize(formatSizeShort(bytes)), bytes, formatSizeShort(bytes));
  }
  assert.equal(formatSizeShort(8 * GiB), "8G");
  assert.equal(formatSizeShort(1536 * MiB), "1536M");
});

test("formatSizeBytes output parses back to within rounding", () => {
  for (const bytes of [KiB, 2 * GiB, 1.5 * GiB, 700 * MiB]) {
    const text = formatSizeBytes(bytes).replace(" ", "");
    assert.ok(Math.abs(parseSize(text) - bytes) / bytes < 0.05, text);
  }
});
