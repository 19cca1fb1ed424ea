import type { CommandRunner } from "./runner.js";

export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

/** `alice` or `1000` → the passwd entry, through NSS (getent); null when there is none. */
export async function lookupUser(runner: CommandRunner, spec: string): Promise<UserInfo | null> {
  const r = await runner.run("getent", ["passwd", spec], { timeoutMs: 10_000 });
  const fields = r.code === 0 ? (r.stdout.split("\n")[0] ?? "").split(":") : [];
  if (fields.length < 6) return null;
  return {
    name: fields[0] ?? spec,
    uid: Number(fields[2]),
    gid: Number(fields[3]),
    home: fields[5] ?? "",
  };
}
