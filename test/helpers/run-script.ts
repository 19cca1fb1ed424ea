import { spawn } from "node:child_process";

export interface ScriptRun {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a guest script's argv on the host to its end (killed after 60 s), `input` on its stdin. */
export function runScript(
  argv: string[],
  input: string | Buffer = "",
  env: NodeJS.ProcessEnv = process.env,
): Promise<ScriptRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"], env });
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => (err += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err });
    });
    child.stdin.on("error", () => {}); // a script that fails early never reads its stdin
    child.stdin.end(input);
  });
}
