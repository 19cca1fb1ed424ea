import fs from "node:fs";
import Database from "better-sqlite3";
import type { EntryMeta, EntryTable } from "./entry-meta.js";

interface Row {
  path: string;
  uid: number;
  gid: number;
  mode: number;
  cap: Buffer | null;
  layer: number;
}

const toMeta = (r: Row): EntryMeta => ({
  uid: r.uid,
  gid: r.gid,
  mode: r.mode,
  ...(r.cap ? { capability: r.cap } : {}),
});

const PAGE = 500;

/** Paths strictly under `rel`: [rel/, rel0) in byte order, '0' being the byte after '/'. */
const below = (rel: string): [string, string] => [`${rel}/`, `${rel}0`];

/**
 * An EntryTable in a throwaway SQLite file, so the daemon's memory stays flat however many
 * paths an image has. It also records which layer wrote each path (opaque directories keep
 * only their own layer's entries) and each regular file's size (for sizing the filesystem).
 */
export class EntryDb implements EntryTable {
  /** The layer `set` attributes entries to. */
  layer = 0;
  private readonly db: Database.Database;
  private readonly stmts: ReturnType<EntryDb["prepare"]>;
  private closed = false;

  constructor(readonly file: string) {
    fs.rmSync(file, { force: true });
    this.db = new Database(file);
    // Scratch data: no journal, no fsync; one connection; a small page cache bounds memory.
    this.db.pragma("journal_mode = OFF");
    this.db.pragma("synchronous = OFF");
    this.db.pragma("locking_mode = EXCLUSIVE");
    this.db.pragma("cache_size = -8192");
    this.db.pragma("temp_store = FILE");
    this.db.exec(
      `CREATE TABLE e (path TEXT PRIMARY KEY, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
         mode INTEGER NOT NULL, cap BLOB, size INTEGER NOT NULL, layer INTEGER NOT NULL) WITHOUT ROWID;
       CREATE TABLE opaque (layer INTEGER NOT NULL, path TEXT NOT NULL, PRIMARY KEY (layer, path)) WITHOUT ROWID;`,
    );
    this.stmts = this.prepare();
    // Writes are grouped in transactions: one commit per statement costs a write per page.
    this.db.exec("BEGIN");
  }

  private writes = 0;
  private wrote(): void {
    if (++this.writes % 10_000 === 0) this.db.exec("COMMIT; BEGIN");
  }

  private prepare() {
    const db = this.db;
    return {
      put: db.prepare(
        "INSERT OR REPLACE INTO e (path, uid, gid, mode, cap, size, layer) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ),
      get: db.prepare("SELECT * FROM e WHERE path = ?"),
      count: db.prepare("SELECT count(*) AS n FROM e").pluck(),
      del: db.prepare("DELETE FROM e WHERE path = ? OR (path >= ? AND path < ?)"),
      all: db.prepare("SELECT * FROM e ORDER BY path"),
      lowerPage: db.prepare(
        `SELECT * FROM e WHERE path > ? AND path < ? AND layer < ? ORDER BY path LIMIT ${PAGE}`,
      ),
      lowerPageAll: db.prepare(
        `SELECT * FROM e WHERE path > ? AND layer < ? ORDER BY path LIMIT ${PAGE}`,
      ),
      hasLayerBelow: db
        .prepare("SELECT 1 FROM e WHERE path >= ? AND path < ? AND layer = ? LIMIT 1")
        .pluck(),
      bytes: db
        .prepare(
          "SELECT count(*) * 4096 + coalesce(sum((size + 4095) / 4096 * 4096), 0) AS n FROM e",
        )
        .pluck(),
      addOpaque: db.prepare("INSERT OR IGNORE INTO opaque (layer, path) VALUES (?, ?)"),
      opaquePage: db
        .prepare(
          `SELECT path FROM opaque WHERE layer = ? AND (? IS NULL OR path > ?) ORDER BY path LIMIT ${PAGE}`,
        )
        .pluck(),
    };
  }

  get size(): number {
    return this.stmts.count.get() as number;
  }

  get(rel: string): EntryMeta | undefined {
    const row = this.stmts.get.get(rel) as Row | undefined;
    return row ? toMeta(row) : undefined;
  }

  has(rel: string): boolean {
    return this.stmts.get.get(rel) !== undefined;
  }

  /** Records `rel` as written by the current layer; `size` counts towards the filesystem size. */
  set(rel: string, meta: EntryMeta, size = 0): this {
    this.stmts.put.run(
      rel,
      meta.uid,
      meta.gid,
      meta.mode,
      meta.capability ?? null,
      size,
      this.layer,
    );
    this.wrote();
    return this;
  }

  /** Forgets `rel` and everything under it. */
  deleteTree(rel: string): void {
    this.stmts.del.run(rel, ...below(rel));
    this.wrote();
  }

  /** Does the current layer have an entry strictly under `rel`? */
  currentLayerBelow(rel: string): boolean {
    return this.stmts.hasLayerBelow.get(...below(rel), this.layer) !== undefined;
  }

  /** Entries strictly under `dir` from lower layers, in path order, a page at a time. */
  *lowerLayersBelow(dir: string): Generator<[string, EntryMeta]> {
    // Paged so the caller may delete between pages (a live iterator holds the connection).
    let cursor = dir === "" ? "" : `${dir}/`;
    for (;;) {
      const page = (
        dir === ""
          ? this.stmts.lowerPageAll.all(cursor, this.layer)
          : this.stmts.lowerPage.all(cursor, below(dir)[1], this.layer)
      ) as Row[];
      for (const r of page) yield [r.path, toMeta(r)];
      if (page.length < PAGE) return;
      cursor = page[page.length - 1]!.path;
    }
  }

  addOpaque(dir: string): void {
    this.stmts.addOpaque.run(this.layer, dir);
    this.wrote();
  }

  /** The current layer's opaque directories, in path order. */
  *opaqueDirs(): Generator<string> {
    let cursor: string | null = null;
    for (;;) {
      const page = this.stmts.opaquePage.all(this.layer, cursor, cursor) as string[];
      yield* page;
      if (page.length < PAGE) return;
      cursor = page[page.length - 1]!;
    }
  }

  /** Bytes the tree takes on ext4, roughly: a 4 KiB block per inode plus whole blocks of data. */
  estimatedBytes(): number {
    return this.stmts.bytes.get() as number;
  }

  *[Symbol.iterator](): Iterator<[string, EntryMeta]> {
    for (const row of this.stmts.all.iterate() as IterableIterator<Row>)
      yield [row.path, toMeta(row)];
  }

  /** Closes the database and removes its file. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
    fs.rmSync(this.file, { force: true });
  }
}
