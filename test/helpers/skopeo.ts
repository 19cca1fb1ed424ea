import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export type ArchiveKind = "docker-archive" | "oci-archive" | "oci";

/**
 * Saves `ref` from the plain-HTTP test registry as `kind` at `dest` with the real skopeo, as a
 * user would (`skopeo copy docker://... oci-archive:app.tar`). Its own accept-anything policy
 * and empty auth file, so the host's containers config does not matter.
 */
export async function skopeoSave(
  registryHost: string,
  repo: string,
  tag: string,
  kind: ArchiveKind,
  dest: string,
  work: string,
): Promise<void> {
  const policy = path.join(work, "policy.json");
  const auth = path.join(work, "auth.json");
  await fs.writeFile(policy, JSON.stringify({ default: [{ type: "insecureAcceptAnything" }] }));
  await fs.writeFile(auth, "{}");
  const target = kind === "docker-archive" ? `${dest}:${repo}:${tag}` : `${dest}:${tag}`;
  await run(
    "skopeo",
    [
      "--policy",
      policy,
      "copy",
      "--quiet",
      "--src-tls-verify=false",
      "--authfile",
      auth,
      `docker://${registryHost}/${repo}:${tag}`,
      `${kind}:${target}`,
    ],
    { timeout: 120_000 },
  );
}
