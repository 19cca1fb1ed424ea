// Hostile image references (and pull parameters) through the daemon's image.pull RPC. Every
// row must fail fast and without the network: it is malformed, or names a closed local port.
import { after, before, test } from "node:test";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

type Params = Record<string, unknown>;
const hex = (c: string, n = 64) => c.repeat(n);
const BAD_REF = /invalid image reference/;
const rows: Array<HostileRow<Params>> = [
  { name: "empty", input: { ref: "" }, expect: /ref|empty|invalid/i },
  { name: "blank", input: { ref: "   " }, expect: /it is empty/ },
  { name: "dot-dot", input: { ref: ".." }, expect: BAD_REF },
  { name: "path traversal", input: { ref: "../../etc/passwd" }, expect: BAD_REF },
  { name: "dot-dot component", input: { ref: "a/../b" }, expect: /must be lower-case/ },
  { name: "double quotes", input: { ref: '"quoted"' }, expect: /must be lower-case/ },
  { name: "single quote", input: { ref: "a'b" }, expect: /must be lower-case/ },
  { name: "newline", input: { ref: "a\nb" }, expect: /must be lower-case/ },
  { name: "escape sequence", input: { ref: "a\u001b[31mred" }, expect: BAD_REF },
  { name: "NUL byte", input: { ref: "a\u0000b" }, expect: BAD_REF },
  { name: "tab", input: { ref: "a\tb" }, expect: BAD_REF },
  { name: "space", input: { ref: "a b" }, expect: /not a valid tag|must be lower-case/ },
  { name: "300 characters", input: { ref: "a".repeat(300) }, expect: /longer than 255/ },
  {
    name: "300 characters in a path",
    input: { ref: `127.0.0.1:1/${"b/".repeat(150)}c` },
    expect: /longer than 255/,
  },
  { name: "unicode", input: { ref: "débian" }, expect: /must be lower-case/ },
  { name: "upper case", input: { ref: "Upper/Case" }, expect: /must be lower-case/ },
  {
    name: "port 99999",
    input: { ref: "localhost:99999/x" },
    expect: /port 99999 .* not from 1 to 65535/,
  },
  { name: "port 0", input: { ref: "localhost:0/x" }, expect: /port 0 .* not from 1 to 65535/ },
  { name: "port 65536", input: { ref: "127.0.0.1:65536/x" }, expect: /not from 1 to 65535/ },
  { name: "negative port", input: { ref: "127.0.0.1:-1/x" }, expect: /not a registry host/ },
  { name: "empty port", input: { ref: "host:/x" }, expect: /not a registry host/ },
  { name: "port with letters", input: { ref: "localhost:80a/x" }, expect: /not a registry host/ },
  { name: "unclosed IPv6", input: { ref: "[::1/x" }, expect: BAD_REF },
  { name: "double dot host", input: { ref: "ex..com/x" }, expect: /not a registry host/ },
  { name: "host with a leading dash", input: { ref: "-a.com/x" }, expect: /not a registry host/ },
  { name: "host with an underscore", input: { ref: "a_b.io/x" }, expect: /not a registry host/ },
  { name: "userinfo in host", input: { ref: "user@evil.com/x" }, expect: BAD_REF },
  { name: "empty digest", input: { ref: "x@sha256:" }, expect: /64 lower-case hex/ },
  { name: "short digest", input: { ref: `x@sha256:${hex("a", 63)}` }, expect: /64 lower-case hex/ },
  {
    name: "upper-case digest",
    input: { ref: `x@sha256:${hex("A")}` },
    expect: /64 lower-case hex/,
  },
  { name: "non-hex digest", input: { ref: `x@sha256:${hex("g")}` }, expect: /64 lower-case hex/ },
  { name: "md5 digest", input: { ref: `x@md5:${hex("a", 32)}` }, expect: /64 lower-case hex/ },
  { name: "bare @", input: { ref: "x@" }, expect: /64 lower-case hex/ },
  {
    name: "two digests",
    input: { ref: `x@sha256:${hex("a")}@sha256:${hex("b")}` },
    expect: /64 lower-case hex/,
  },
  { name: "empty tag", input: { ref: "x:" }, expect: /not a valid tag/ },
  { name: "tag with a leading dash", input: { ref: "x:-bad" }, expect: /not a valid tag/ },
  { name: "129-character tag", input: { ref: `x:${"t".repeat(129)}` }, expect: /not a valid tag/ },
  { name: "double colon", input: { ref: "x::y" }, expect: BAD_REF },
  { name: "double slash", input: { ref: "a//b" }, expect: /empty path component/ },
  { name: "leading slash", input: { ref: "/a" }, expect: /empty path component/ },
  { name: "trailing slash", input: { ref: "a/" }, expect: /empty path component/ },
  { name: "registry only", input: { ref: "host:5000/" }, expect: /empty path component/ },
  {
    name: "closed port on 127.0.0.1",
    input: { ref: "127.0.0.1:1/x:y" },
    expect: /cannot reach registry 127\.0\.0\.1:1|refused the connection/,
  },
  {
    name: "closed port on localhost",
    input: { ref: "localhost:1/x" },
    expect: /registry localhost:1/,
  },
  {
    name: "hostile local name",
    input: { ref: "127.0.0.1:1/x", name: "../evil" },
    expect: /invalid image name/,
  },
  {
    name: "upper-case local name",
    input: { ref: "127.0.0.1:1/x", name: "Evil" },
    expect: /invalid image name/,
  },
  {
    name: "64-character local name",
    input: { ref: "127.0.0.1:1/x", name: "n".repeat(64) },
    expect: /invalid image name/,
  },
  {
    name: "negative size",
    input: { ref: "127.0.0.1:1/x", sizeBytes: -1 },
    expect: /sizeBytes|invalid/i,
  },
  { name: "ref is a number", input: { ref: 42 }, expect: /ref|invalid/i },
  {
    name: "unknown parameter",
    input: { ref: "127.0.0.1:1/x", evil: true },
    expect: /evil|unrecognized|invalid/i,
  },
];

let daemon: HostileDaemon;
before(async () => {
  daemon = await hostileDaemon();
});
after(async () => {
  await daemon?.close();
});

test(`hostile image references: ${rows.length} rows fail fast and clearly, leave nothing`, async () => {
  const client = await daemon.connect();
  try {
    await runTable(
      rows,
      // Nothing here may reach the network: a row that hangs is a failure of its own.
      (params) =>
        Promise.race([
          client.call("image.pull", params as never),
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error("no answer in 15 s")), 15_000).unref(),
          ),
        ]),
      { daemon, roots: [daemon.home.home] },
    );
  } finally {
    client.close();
  }
});
