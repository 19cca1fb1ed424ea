import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { methodNames } from "../src/api/methods.js";
import { buildHandlers } from "../src/daemon/handlers.js";
import { Store } from "../src/store/store.js";
import { tempLayout } from "./helpers/temp-home.js";

test("docs/internals/rpc.md lists exactly the registered methods", async () => {
  const doc = await readFile(new URL("../docs/internals/rpc.md", import.meta.url), "utf8");
  const documented = [...doc.matchAll(/^\| `([a-z]+(?:\.[a-z]+)+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual([...documented].sort(), [...methodNames].sort());
});

test("every registered method has a handler", async () => {
  // The handler map is typed against the table; this guards against a cast slipping in.
  const home = await tempLayout();
  const store = Store.open(home.layout.dbFile);
  try {
    const log = { info() {}, error() {} };
    const fakeDaemon = {
      store,
      deps: { version: "0", log, env: home.env },
      startedAt: new Date(),
      layout: home.layout,
      addCloser() {},
    };
    const handlers = buildHandlers(fakeDaemon as unknown as Parameters<typeof buildHandlers>[0]);
    assert.deepEqual(Object.keys(handlers).sort(), [...methodNames].sort());
    assert.deepEqual(
      await handlers["vm.list"]({}, { progress() {}, signal: new AbortController().signal }),
      [],
    );
  } finally {
    store.close();
    await home.cleanup();
  }
});
