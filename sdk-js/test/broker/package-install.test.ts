//! The package as a user gets it. A copy of this checkout without dist/ is packed with
//! `npm pack` (the prepack script builds it); the tarball must hold exactly the builds, their
//! types and source maps (with their sources embedded), the README and the LICENSE. It is then
//! installed into two fresh projects, one ES module and one CommonJS, where the READMEs' Node
//! examples run against a real roomd and must print what they promise and exit by themselves,
//! and where `tsc` (node16 resolution) resolves the types of `roomd` and `roomd/browser`.
//!
//! npm runs with --prefer-offline: its cache (filled by `npm ci`) serves @msgpack/msgpack and ws
//! without the network when it has them.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { Broker, REPO_DIR, SDK_DIR, tempDir } from "../harness.js";

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The environment of a child npm: without what the npm running this test set for its script
 * (npm_config_local_prefix would point the child at sdk-js/), but with the user's npm config. */
const KEEP_NPM = new Set(["npm_config_cache", "npm_config_userconfig", "npm_config_globalconfig", "npm_config_registry", "npm_config_cafile"]);
const childEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith("npm_") || KEEP_NPM.has(k.toLowerCase())),
);

function run(cmd: string, args: string[], cwd: string, timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(cmd, args, { cwd, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Runs a command that must succeed; its stdout. */
async function ok(cmd: string, args: string[], cwd: string, timeoutMs = 120_000): Promise<string> {
  const r = await run(cmd, args, cwd, timeoutMs);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} (in ${cwd}): ${r.signal ?? `exit ${r.code}`}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

const SKIP_TOP = new Set(["node_modules", "dist", "build", "test-output"]);
const modules = readdirSync(join(SDK_DIR, "src"))
  .filter((f) => f.endsWith(".ts"))
  .map((f) => f.slice(0, -3));
const sdkPackage = JSON.parse(readFileSync(join(SDK_DIR, "package.json"), "utf8")) as {
  devDependencies: Record<string, string>;
};

let work = "";
let tarball = "";
let packed: string[] = [];
let esm = "";
let cjs = "";
let broker: Broker | undefined;

before(
  async () => {
    work = tempDir("pack");
    // The checkout as a clone has it: sources and scripts, no dist/; node_modules shared.
    const checkout = join(work, "checkout");
    cpSync(SDK_DIR, checkout, {
      recursive: true,
      filter: (src) => {
        const rel = relative(SDK_DIR, src);
        return !SKIP_TOP.has(rel.split(sep)[0] ?? "") && !rel.endsWith(".tgz");
      },
    });
    symlinkSync(join(SDK_DIR, "node_modules"), join(checkout, "node_modules"), "dir");
    assert.ok(!existsSync(join(checkout, "dist")));

    const [, started] = await Promise.all([ok("npm", ["pack", "--pack-destination", work], checkout), Broker.start()]);
    broker = started;
    const tgz = readdirSync(work).filter((f) => f.endsWith(".tgz"));
    assert.equal(tgz.length, 1, `npm pack made ${tgz.join(", ")}`);
    tarball = join(work, tgz[0]!);
    packed = (await ok("tar", ["-tzf", tarball], work))
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => l.replace(/^package\//, ""))
      .sort();

    // Two fresh projects, the tarball and ws (for Node 20) installed in each.
    const project = async (name: string, type: "module" | "commonjs"): Promise<string> => {
      const dir = join(work, name);
      mkdirSync(dir);
      writeFileSync(join(dir, "package.json"), `${JSON.stringify({ name, version: "1.0.0", private: true, type }, null, 2)}\n`);
      const ws = `ws@${sdkPackage.devDependencies["ws"] ?? "8"}`;
      await ok("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", tarball, ws], dir);
      return dir;
    };
    [esm, cjs] = await Promise.all([project("app-esm", "module"), project("app-cjs", "commonjs")]);
  },
  { timeout: 180_000 },
);

after(async () => {
  await broker?.stop();
  broker?.cleanup();
  if (work !== "") rmSync(work, { recursive: true, force: true });
});

test("npm pack of a checkout without dist/ builds it and packs the builds, their types and maps, README and LICENSE", () => {
  const expected = [
    "LICENSE",
    "README.md",
    "package.json",
    "dist/cjs/package.json",
    "dist/roomd.browser.js",
    "dist/roomd.browser.js.map",
    "dist/roomd.browser.d.ts",
    ...modules.flatMap((m) => ["esm", "cjs"].flatMap((b) => [`dist/${b}/${m}.js`, `dist/${b}/${m}.js.map`, `dist/${b}/${m}.d.ts`])),
  ].sort();
  assert.deepEqual(packed, expected);

  // Every file package.json points at is in the package.
  const manifest = JSON.parse(readFileSync(join(esm, "node_modules/roomd/package.json"), "utf8")) as Record<string, unknown>;
  const targets: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === "string") targets.push(v);
    else if (v !== null && typeof v === "object") Object.values(v).forEach(walk);
  };
  walk([manifest["main"], manifest["module"], manifest["types"], manifest["exports"]]);
  assert.ok(targets.length >= 9, targets.join(" "));
  for (const t of targets) assert.ok(packed.includes(t.replace(/^\.\//, "")), `${t} is not in the package`);
});

test("the installed package's LICENSE is the repository's, and every source map embeds its sources", () => {
  const pkg = join(esm, "node_modules/roomd");
  assert.equal(readFileSync(join(pkg, "LICENSE"), "utf8"), readFileSync(join(REPO_DIR, "LICENSE"), "utf8"));
  const maps = packed.filter((f) => f.endsWith(".map"));
  assert.equal(maps.length, 2 * modules.length + 1);
  for (const f of maps) {
    const map = JSON.parse(readFileSync(join(pkg, f), "utf8")) as { sources: string[]; sourcesContent?: (string | null)[] };
    assert.ok(map.sources.length > 0, f);
    assert.equal(map.sourcesContent?.length, map.sources.length, `${f}: sourcesContent`);
    (map.sourcesContent ?? []).forEach((content, i) => assert.ok(typeof content === "string" && content.length > 0, `${f}: no content for ${map.sources[i]}`));
    // The .js names its map, and the map is there.
    const js = readFileSync(join(pkg, f.slice(0, -".map".length)), "utf8");
    const name = f.split("/").pop()!;
    assert.ok(js.trimEnd().endsWith(`//# sourceMappingURL=${name}`), `${f}: not referenced by its .js`);
  }
});

test("import resolves to the ES modules and require to the CommonJS build", async () => {
  writeFileSync(join(esm, "resolve.js"), 'console.log(import.meta.resolve("roomd"));\nconsole.log(import.meta.resolve("roomd/browser"));\n');
  const esmOut = (await ok(process.execPath, ["resolve.js"], esm, 15_000)).split("\n");
  assert.equal(esmOut[0], pathToFileURL(join(esm, "node_modules/roomd/dist/esm/index.js")).href);
  assert.equal(esmOut[1], pathToFileURL(join(esm, "node_modules/roomd/dist/roomd.browser.js")).href);
  writeFileSync(join(cjs, "resolve.js"), 'const roomd = require("roomd");\nconsole.log(require.resolve("roomd"), typeof roomd.Client);\n');
  assert.equal((await ok(process.execPath, ["resolve.js"], cjs, 15_000)).trim(), `${join(cjs, "node_modules/roomd/dist/cjs/index.js")} function`);
});

/** The first ```ts block after `heading` in a README. */
function codeAfter(readme: string, heading: string): string {
  const md = readFileSync(readme, "utf8");
  const at = md.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `${readme} has no ${heading}`);
  const m = /```ts\n([\s\S]*?)```/.exec(md.slice(at));
  assert.ok(m !== null, `${readme}: no ts block after ${heading}`);
  return m[1]!;
}

/** The same example as CommonJS: imports become requires, the rest an async function. */
function toCommonJS(code: string): string {
  const head: string[] = [];
  const body: string[] = [];
  for (const line of code.split("\n")) {
    const def = /^import (\w+) from ("[^"]+");(.*)$/.exec(line);
    const named = /^import \{([^}]*)\} from ("[^"]+");(.*)$/.exec(line);
    if (def !== null) head.push(`const ${def[1]} = require(${def[2]});${def[3]}`);
    else if (named !== null) head.push(`const {${named[1]}} = require(${named[2]});${named[3]}`);
    else if (/^\s*import\b/.test(line)) assert.fail(`cannot turn into CommonJS: ${line}`);
    else body.push(`  ${line}`);
  }
  return [...head, "(async () => {", ...body, "})().catch((e) => {", "  console.error(e);", "  process.exitCode = 1;", "});", ""].join("\n");
}

// roomd fans an entry out before it acknowledges it, so a client subscribed to the room it
// publishes in gets its own message before the publish resolves: the output is exact.
const EXAMPLES = [
  { name: "README.md", readme: join(REPO_DIR, "README.md"), heading: "## Use it from JavaScript", output: /^(\d+) hello\nstored at seq \1\n$/ },
  { name: "sdk-js/README.md", readme: join(SDK_DIR, "README.md"), heading: "## In Node", output: /^(\d+) \S+ hello from node\nstored at seq \1\n$/ },
];

for (const ex of EXAMPLES) {
  for (const kind of ["ESM", "CommonJS"] as const) {
    test(`${ex.name}'s Node example runs in a fresh ${kind} project, prints what it promises and exits by itself`, async (t) => {
      const b = broker!;
      let code = codeAfter(ex.readme, ex.heading);
      assert.match(code, /client\.close\(\)/, "the example closes its client");
      assert.ok(code.includes("ws://127.0.0.1:7700/ws"), "the example's URL");
      code = code.replaceAll("ws://127.0.0.1:7700/ws", b.wsUrl);
      const dir = kind === "ESM" ? esm : cjs;
      const file = `example-${ex.name.replace(/\W+/g, "-")}.js`;
      writeFileSync(join(dir, file), kind === "ESM" ? code : toCommonJS(code));
      const r = await run(process.execPath, [file], dir, 15_000);
      assert.equal(r.signal, null, `killed after ${r.ms} ms: it did not exit by itself\n${r.stdout}\n${r.stderr}`);
      assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, ex.output);
      assert.equal(r.stderr, "");
      t.diagnostic(`ran and exited in ${r.ms} ms`);
    });
  }
}

test("tsc (strict, node16 resolution) finds the types of roomd and roomd/browser in both projects", async () => {
  const tsc = join(SDK_DIR, "node_modules/typescript/bin/tsc");
  const flags = ["--noEmit", "--strict", "--skipLibCheck", "false", "--module", "node16", "--moduleResolution", "node16", "--target", "es2022", "--lib", "es2022,dom", "--explainFiles"];
  const url = '"ws://127.0.0.1:1/ws", { reconnect: false }';
  writeFileSync(
    join(esm, "check.ts"),
    [
      'import { Client, RoomdError, type SubscriptionState } from "roomd";',
      'import * as browser from "roomd/browser";',
      `const client: Client = new Client(${url});`,
      'const state: SubscriptionState = client.room("r").subscriptionState;',
      `const page: browser.Client = new browser.Client(${url});`,
      "// @ts-expect-error a room name is a string (were the types any, this would be unused)",
      "page.room(1);",
      "export const used = [state, page, RoomdError] as const;",
      "",
    ].join("\n"),
  );
  writeFileSync(
    join(cjs, "check.cts"),
    [
      'import { Client, RoomdError, type SubscriptionState } from "roomd";',
      `const client: Client = new Client(${url});`,
      'const state: SubscriptionState = client.room("r").subscriptionState;',
      "// @ts-expect-error a room name is a string (were the types any, this would be unused)",
      "client.room(1);",
      "export async function page(): Promise<unknown> {",
      '  const browser = await import("roomd/browser");',
      `  const c: InstanceType<typeof browser.Client> = new browser.Client(${url});`,
      "  // @ts-expect-error a room name is a string",
      "  c.room(1);",
      "  return [c, state, RoomdError];",
      "}",
      "",
    ].join("\n"),
  );
  const [esmOut, cjsOut] = await Promise.all([
    ok(process.execPath, [tsc, ...flags, "check.ts"], esm),
    ok(process.execPath, [tsc, ...flags, "check.cts"], cjs),
  ]);
  assert.match(esmOut, /node_modules\/roomd\/dist\/esm\/index\.d\.ts/);
  assert.match(esmOut, /node_modules\/roomd\/dist\/roomd\.browser\.d\.ts/);
  assert.doesNotMatch(esmOut, /dist\/cjs\//);
  assert.match(cjsOut, /node_modules\/roomd\/dist\/cjs\/index\.d\.ts/);
  assert.match(cjsOut, /node_modules\/roomd\/dist\/roomd\.browser\.d\.ts/);
});
