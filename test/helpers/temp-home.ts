import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { resolveLayout, type Layout } from "../../src/paths/layout.js";
import { Store } from "../../src/store/store.js";

export interface TempLayout {
  home: string;
  layout: Layout;
  /** Environment for child processes: everything banger touches lives under `home`. */
  env: NodeJS.ProcessEnv;
  cleanup(): Promise<void>;
}

/** A fresh BANGER_HOME; every test gets its own so tests can run in parallel. */
export async function tempLayout(prefix = "banger-test-"): Promise<TempLayout> {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  const env: NodeJS.ProcessEnv = { ...process.env, BANGER_HOME: home };
  delete env.XDG_RUNTIME_DIR;
  // Bridge networking changes the host (bridge, DNS on :53); only tests that want it turn it on.
  env.BANGER_NETWORK = "user";
  return {
    home,
    layout: resolveLayout({ BANGER_HOME: home }),
    env,
    cleanup: () => fs.rm(home, { recursive: true, force: true }),
  };
}

/** Runs fn with a fresh home and an open store in it; both go afterwards, whatever fn did. */
export async function withTempStore(
  fn: (home: TempLayout, store: Store) => Promise<void>,
  prefix?: string,
): Promise<void> {
  const home = await tempLayout(prefix);
  const store = Store.open(home.layout.dbFile);
  try {
    await fn(home, store);
  } finally {
    store.close();
    await home.cleanup();
  }
}
