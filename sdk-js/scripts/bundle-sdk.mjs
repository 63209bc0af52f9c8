// Part of `npm run build`: the SDK as one browser-ready ES module with its MessagePack
// dependency inlined, dist/roomd.browser.js, for pages that load it without a bundler:
//   <script type="module">import { Client } from "/roomd.browser.js"; …</script>
import { build } from "esbuild";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
await build({
  entryPoints: [join(root, "src/index.ts")],
  outfile: join(root, "dist/roomd.browser.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  legalComments: "none",
  logLevel: "warning",
});
