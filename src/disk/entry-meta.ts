// Types and mode bits shared by every tree bound for ext4 (image layers, work disks, guest
// assets); kept apart from EntryDb so importers do not load SQLite.

/** Ownership and exact mode (file type bits included) of one path in a tree bound for ext4. */
export interface EntryMeta {
  uid: number;
  gid: number;
  /** st_mode: type bits | permission bits (incl. setuid, setgid, sticky). */
  mode: number;
  /** Raw `security.capability` xattr, when the layer carried one. */
  capability?: Buffer;
}

export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

/**
 * Path (relative, no leading slash; "" is the root) → metadata. A Map<string, EntryMeta>
 * is one (small trees: work disks, tests); EntryDb is the one an image's millions of paths use.
 */
export interface EntryTable {
  readonly size: number;
  get(rel: string): EntryMeta | undefined;
  has(rel: string): boolean;
  set(rel: string, meta: EntryMeta): unknown;
  [Symbol.iterator](): Iterator<[string, EntryMeta]>;
}
