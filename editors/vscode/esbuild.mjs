// One bundled file for the .vsix (as Continue and Tabby ship theirs): fast to load, no node_modules inside.
import { build } from "esbuild";

await build({
  entryPoints: ["src/extension.ts"],
  bundle: true,
  outfile: "dist/extension.js",
  platform: "node",
  format: "cjs",
  target: "node18",
  external: ["vscode"],
  minify: true,
  sourcemap: false,
  logLevel: "warning",
});
