// Regenerates docs/commands.md and the README's command table from the real --help.
import fs from "node:fs";
import { buildProgram } from "../src/cli/program.js";
import { referenceDeps, referencePage, referenceTable } from "../src/cli/reference.js";

const START = "<!-- commands:start -->";
const END = "<!-- commands:end -->";

export function renderReadme(readme: string, table: string): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md lacks the ${START} ... ${END} markers`);
  return `${readme.slice(0, a + START.length)}\n${table}${readme.slice(b)}`;
}

if (process.argv[1] && process.argv[1].endsWith("gen-docs.ts")) {
  fs.writeFileSync("docs/commands.md", referencePage(await buildProgram(referenceDeps())));
  const readme = fs.readFileSync("README.md", "utf8");
  fs.writeFileSync(
    "README.md",
    renderReadme(readme, referenceTable(await buildProgram(referenceDeps()))),
  );
  console.log("wrote docs/commands.md and README.md's command table");
}
