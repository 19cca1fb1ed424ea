import zlib from "node:zlib";
import { BangerError, ErrorCode } from "../api/errors.js";

/**
 * Firecracker boots an uncompressed ELF vmlinux; distributions ship a bzImage
 * (vmlinuz). The bzImage header says where its compressed payload is, so we
 * decompress that payload directly instead of scanning for magic bytes.
 */
export function extractVmlinux(bzImage: Buffer): Buffer {
  if (bzImage.length < 0x250 || bzImage.toString("latin1", 0x202, 0x206) !== "HdrS") {
    throw invalid("not a bzImage (no HdrS header)");
  }
  const setupSects = bzImage.readUInt8(0x1f1) || 4;
  const protectedModeStart = (setupSects + 1) * 512;
  const payloadOffset = bzImage.readUInt32LE(0x248);
  const payloadLength = bzImage.readUInt32LE(0x24c);
  const start = protectedModeStart + payloadOffset;
  const payload = bzImage.subarray(start, start + payloadLength);
  if (payload.length !== payloadLength || payloadLength < 8)
    throw invalid("payload lies outside the file");

  // The kernel build appends the uncompressed size (LE u32) after the compressed stream.
  const expectedSize = payload.readUInt32LE(payload.length - 4);
  const body = payload.subarray(0, payload.length - 4);
  let out: Buffer;
  if (body[0] === 0x1f && body[1] === 0x8b) {
    out = zlib.gunzipSync(body);
  } else if (body.readUInt32LE(0) === LZ4_LEGACY_MAGIC) {
    out = decodeLz4Legacy(body, expectedSize);
  } else {
    const magic = body.subarray(0, 6).toString("hex");
    throw invalid(`unsupported payload compression (magic ${magic}); gzip and lz4 are supported`);
  }
  if (out.length !== expectedSize) {
    throw invalid(`decompressed ${out.length} bytes, header says ${expectedSize}`);
  }
  if (out.readUInt32BE(0) !== 0x7f454c46) throw invalid("payload is not an ELF image");
  return out;
}

const LZ4_LEGACY_MAGIC = 0x184c2102;

/** LZ4 legacy frame: magic, then blocks of (u32 LE compressed size, LZ4 block). */
export function decodeLz4Legacy(input: Buffer, sizeHint = 0): Buffer {
  if (input.readUInt32LE(0) !== LZ4_LEGACY_MAGIC) throw invalid("not an LZ4 legacy frame");
  const out = Buffer.allocUnsafe(Math.max(sizeHint, 8 << 20));
  let outPos = 0;
  let pos = 4;
  let target = out;
  while (pos + 4 <= input.length) {
    const blockSize = input.readUInt32LE(pos);
    pos += 4;
    // Concatenated frames repeat the magic; anything past the data is the end.
    if (blockSize === LZ4_LEGACY_MAGIC) continue;
    if (blockSize === 0 || pos + blockSize > input.length) break;
    // A legacy block decodes to at most 8 MiB.
    if (outPos + (8 << 20) > target.length) {
      const bigger = Buffer.allocUnsafe(Math.max(target.length * 2, outPos + (8 << 20)));
      target.copy(bigger, 0, 0, outPos);
      target = bigger;
    }
    outPos = decodeLz4Block(input, pos, pos + blockSize, target, outPos);
    pos += blockSize;
  }
  return target.subarray(0, outPos);
}

/** One LZ4 block (sequences of literals + back-references); returns the new output position. */
export function decodeLz4Block(
  src: Buffer,
  start: number,
  end: number,
  dst: Buffer,
  dstStart: number,
): number {
  let s = start;
  let d = dstStart;
  while (s < end) {
    const token = src[s++]!;
    let literals = token >>> 4;
    if (literals === 15) {
      let b: number;
      do {
        if (s >= end) throw invalid("truncated LZ4 literal length");
        b = src[s++]!;
        literals += b;
      } while (b === 255);
    }
    if (s + literals > end || d + literals > dst.length) throw invalid("LZ4 literals overrun");
    src.copy(dst, d, s, s + literals);
    s += literals;
    d += literals;
    if (s >= end) break; // the last sequence has literals only
    if (s + 2 > end) throw invalid("truncated LZ4 match offset");
    const offset = src[s]! | (src[s + 1]! << 8);
    s += 2;
    if (offset === 0 || offset > d) throw invalid("LZ4 match offset out of range");
    let matchLength = (token & 15) + 4;
    if ((token & 15) === 15) {
      let b: number;
      do {
        if (s >= end) throw invalid("truncated LZ4 match length");
        b = src[s++]!;
        matchLength += b;
      } while (b === 255);
    }
    if (d + matchLength > dst.length) throw invalid("LZ4 match overruns the output");
    // Byte by byte: a match may overlap the bytes it is producing.
    let from = d - offset;
    for (let i = 0; i < matchLength; i++) dst[d++] = dst[from++]!;
  }
  return d;
}

function invalid(why: string): BangerError {
  return new BangerError(ErrorCode.InvalidParams, `cannot extract vmlinux: ${why}`);
}
