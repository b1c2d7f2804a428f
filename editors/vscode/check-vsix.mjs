// What the .vsix ships: the bundle, the manifest, the icon, README, CHANGELOG and LICENSE; nothing else.
import { execFileSync } from "node:child_process";

const vsix = process.argv[2];
const listing = execFileSync("python3", ["-m", "zipfile", "-l", vsix], { encoding: "utf8" });
const files = listing.split("\n").slice(1).map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
const must = ["extension/dist/extension.js", "extension/package.json", "extension/images/icon.png", "extension/readme.md", "extension/changelog.md", "extension/LICENSE.txt"];
const missing = must.filter((m) => !files.some((f) => f.toLowerCase() === m.toLowerCase()));
const unwanted = files.filter((f) => /(^|\/)(\.gitignore|src\/|node_modules\/|out\/|tsconfig\.json)/.test(f));
if (missing.length || unwanted.length) {
  console.error(`${vsix}: missing ${JSON.stringify(missing)}, unwanted ${JSON.stringify(unwanted)}\n${files.join("\n")}`);
  process.exit(1);
}
console.log(`${vsix}: ${files.length} files, as it should be`);
