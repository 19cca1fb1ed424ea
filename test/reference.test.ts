import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { buildProgram } from "../src/cli/program.js";
import {
  referenceDeps,
  referencePage,
  referenceTable,
  walkCommands,
} from "../src/cli/reference.js";
import { renderReadme } from "../scripts/gen-docs.js";

const root = new URL("..", import.meta.url);

test("docs/commands.md matches the real --help (run 'make docs' to refresh)", async () => {
  const onDisk = await readFile(new URL("docs/commands.md", root), "utf8");
  assert.equal(onDisk, referencePage(await buildProgram(referenceDeps())));
});

test("README's command table matches the real command tree (run 'make docs' to refresh)", async () => {
  const readme = await readFile(new URL("README.md", root), "utf8");
  assert.equal(readme, renderReadme(readme, referenceTable(await buildProgram(referenceDeps()))));
});

test("every group's landing help has examples and a next step", async () => {
  const program = await buildProgram(referenceDeps());
  for (const { path, cmd } of walkCommands(program)) {
    if (cmd.commands.length === 0) continue;
    let help = "";
    cmd.configureOutput({ writeOut: (s) => (help += s) });
    cmd.outputHelp();
    assert.match(help, /Examples:\n {2}\$ (sudo )?banger /, `${path.join(" ")} has examples`);
    assert.match(help, /Next: /, `${path.join(" ")} says what comes next`);
  }
});

test("every list and show command takes --json, every list has ls and every delete has rm", async () => {
  for (const { path, cmd } of walkCommands(await buildProgram(referenceDeps()))) {
    const verb = path.at(-1);
    if (verb === "list" || verb === "show") {
      assert.ok(
        cmd.options.some((o) => o.long === "--json"),
        `${path.join(" ")} --json`,
      );
    }
    if (verb === "list") assert.ok(cmd.aliases().includes("ls"), `${path.join(" ")} ls`);
    if (verb === "delete") assert.ok(cmd.aliases().includes("rm"), `${path.join(" ")} rm`);
  }
});

test("the vm index reads lifecycle verbs apart", async () => {
  const vm = (await buildProgram(referenceDeps())).commands.find((c) => c.name() === "vm")!;
  const summary = (name: string) => vm.commands.find((c) => c.name() === name)!.description();
  assert.equal(summary("start"), "Start a stopped VM");
  assert.equal(summary("stop"), "Stop a running VM gracefully");
  assert.equal(summary("restart"), "Stop then start a VM");
  assert.equal(summary("kill"), "Force-kill a VM (use when 'vm stop' hangs)");
  assert.equal(summary("delete"), "Stop a VM and remove its disks (irreversible)");
});
