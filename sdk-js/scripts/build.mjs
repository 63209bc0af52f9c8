// `npm run build`, and `npm pack` / `npm publish` through the prepack script: dist/ from
// scratch (a file left from an older layout would otherwise be packed).
//
//   dist/esm/        ES modules with their .d.ts (tsc -p tsconfig.json)      import … from "roomd"
//   dist/cjs/        CommonJS with its .d.ts (tsc -p tsconfig.cjs.json) and  require("roomd")
//                    a package.json {"type": "commonjs"}, so that Node and TypeScript (node16,
//                    nodenext) read its .js and .d.ts files as CommonJS
//   dist/roomd.browser.js   the SDK as one browser-ready ES module with its   "roomd/browser"
//                    MessagePack dependency inlined (esbuild), for pages that load it without
//                    a bundler: <script type="module">import { Client } from "/roomd.browser.js"
//   dist/roomd.browser.d.ts its types (the same API as "roomd")
//
// Every source map embeds the sources it maps (sourcesContent), as src/ is not in the package.
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");

rmSync(dist, { recursive: true, force: true });

for (const project of ["tsconfig.json", "tsconfig.cjs.json"]) {
  const r = spawnSync(process.execPath, [tsc, "-p", join(root, project)], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
mkdirSync(join(dist, "cjs"), { recursive: true });
writeFileSync(join(dist, "cjs/package.json"), `${JSON.stringify({ type: "commonjs" }, null, 2)}\n`);

await build({
  entryPoints: [join(root, "src/index.ts")],
  outfile: join(dist, "roomd.browser.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  sourcesContent: true,
  legalComments: "none",
  logLevel: "warning",
});
writeFileSync(
  join(dist, "roomd.browser.d.ts"),
  '// Types of roomd.browser.js: the SDK of "roomd" (dist/esm/index.js) bundled into one module.\nexport * from "./esm/index.js";\n',
);
