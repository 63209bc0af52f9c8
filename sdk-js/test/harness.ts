/**
 * Test harness: starts the real `roomd` binary on port 0 (or a given port, to restart in
 * place) with its own data dir, and stops it with SIGTERM or SIGKILL. `ROOMD_BIN` overrides
 * the binary (default: ../target/release/roomd), `ROOMD_CONFIG` the config file (default:
 * ../config/roomd.toml; "none": the built-in defaults).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { Client, type ClientOptions, type WebSocketConstructor } from "../src/index.js";

/** The sdk-js directory (tests run from build/test/…). */
export const SDK_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO_DIR = resolve(SDK_DIR, "..");

export function roomdBin(): string {
  return process.env["ROOMD_BIN"] ?? join(REPO_DIR, "target/release/roomd");
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `roomd-${prefix}-`));
}

export interface BrokerOptions {
  /** Reuse a data dir (to restart over the same data). */
  dataDir?: string;
  /** A fixed port (to restart where clients reconnect). Default 0: any free port. */
  port?: number;
  /** Extra TOML for the config file; the default config file is used when absent. */
  config?: string;
}

export class Broker {
  private stderr: string[] = [];
  private exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    readonly port: number,
    readonly dataDir: string,
    readonly configPath: string | undefined,
    /** The port speaks TLS (`[tls]` in the config): https:// and wss://. */
    readonly tls: boolean,
  ) {
    this.exited = new Promise((res) => proc.once("exit", (code) => res(code)));
    proc.stderr?.on("data", (d: Buffer) => {
      this.stderr.push(d.toString());
      if (this.stderr.length > 400) this.stderr.splice(0, 200);
    });
  }

  get url(): string {
    return `${this.tls ? "https" : "http"}://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `${this.tls ? "wss" : "ws"}://127.0.0.1:${this.port}/ws`;
  }

  logs(): string {
    return this.stderr.join("");
  }

  static async start(o: BrokerOptions = {}): Promise<Broker> {
    const bin = roomdBin();
    if (!existsSync(bin)) throw new Error(`roomd binary not found at ${bin}: run cargo build --release or set ROOMD_BIN`);
    const dataDir = o.dataDir ?? tempDir("data");
    let configPath: string | undefined;
    if (o.config !== undefined) {
      configPath = join(tempDir("config"), "roomd.toml");
      writeFileSync(configPath, o.config);
    } else {
      // The repo's config (as the README runs it); ROOMD_CONFIG overrides, "none" = defaults.
      const env = process.env["ROOMD_CONFIG"];
      const path = env ?? join(REPO_DIR, "config/roomd.toml");
      if (env !== "none" && existsSync(path)) configPath = path;
    }
    return Broker.launch(o.port ?? 0, dataDir, configPath);
  }

  /** Spawn; a fixed port may still be held for a moment by the previous process, so retry. */
  private static async launch(port: number, dataDir: string, configPath: string | undefined): Promise<Broker> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        return await Broker.spawnOnce(roomdBin(), port, dataDir, configPath);
      } catch (e) {
        if (port === 0 || Date.now() > deadline) throw e;
        await sleep(200);
      }
    }
  }

  private static spawnOnce(bin: string, port: number, dataDir: string, configPath: string | undefined): Promise<Broker> {
    const args = ["--listen", `127.0.0.1:${port}`, "--data-dir", dataDir];
    if (configPath !== undefined) args.unshift("--config", configPath);
    // ROOMD_UI_FROM_DISK is the tests' own switch; roomd would read it as the config key ui.from_disk.
    const { ROOMD_UI_FROM_DISK: _testsOnly, ...env } = process.env;
    const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...env, RUST_LOG: process.env["RUST_LOG"] ?? "warn" } });
    const errors: string[] = [];
    proc.stderr.on("data", (d: Buffer) => errors.push(d.toString()));
    return new Promise((res, rej) => {
      const timer = setTimeout(() => {
        proc.kill("SIGKILL");
        rej(new Error(`roomd did not print its address within 15 s:\n${errors.join("")}`));
      }, 15_000);
      const lines = createInterface({ input: proc.stdout });
      lines.on("line", (line) => {
        const m = /listening on (https?):\/\/127\.0\.0\.1:(\d+)/.exec(line);
        if (m === null) return;
        clearTimeout(timer);
        lines.removeAllListeners("line");
        const b = new Broker(proc, Number(m[2]), dataDir, configPath, m[1] === "https");
        b.stderr.push(...errors);
        res(b);
      });
      proc.once("exit", (code, signal) => {
        clearTimeout(timer);
        rej(new Error(`roomd exited (${code ?? signal}) before listening:\n${errors.join("")}`));
      });
    });
  }

  /** Stop: SIGTERM (graceful, closes sockets with 1001) or SIGKILL (a crash). */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  /** Start again on the same port, data dir and config (after `stop`). */
  restart(): Promise<Broker> {
    return Broker.launch(this.port, this.dataDir, this.configPath);
  }

  /** Remove the data dir (after stop). */
  cleanup(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export const WS: WebSocketConstructor = WebSocket;

/** Every socket a test client opened, so a test can cut one. */
export class TrackedWebSocket extends WebSocket {
  static all: TrackedWebSocket[] = [];
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols);
    TrackedWebSocket.all.push(this);
  }
  static latest(): TrackedWebSocket {
    const ws = TrackedWebSocket.all[TrackedWebSocket.all.length - 1];
    if (ws === undefined) throw new Error("no socket yet");
    return ws;
  }
}

/** A client for tests: the ws package, fast reconnects, short timeouts. */
export function client(b: Broker | string | string[], o: ClientOptions = {}): Client {
  return new Client(b instanceof Broker ? b.wsUrl : b, {
    WebSocket: WS,
    reconnect: { baseDelay: 50, maxDelay: 500, minUptime: 1000 },
    requestTimeout: 5000,
    ...o,
  });
}

/**
 * What a broker test file shares: one broker, started before its tests (by `start`) and
 * stopped after them, with every client opened through `client()` closed.
 */
export class BrokerSuite {
  broker!: Broker;
  private readonly clients: Client[] = [];

  constructor(start: () => Promise<Broker> = () => Broker.start()) {
    before(async () => {
      this.broker = await start();
    });
    after(async () => {
      for (const c of this.clients) c.close();
      await this.broker?.stop();
      this.broker?.cleanup();
    });
  }

  /** A test client of `b` (by default the suite's broker), closed after the file's tests. */
  client(o: ClientOptions = {}, b: Broker | string | string[] = this.broker): Client {
    const c = client(b, o);
    this.clients.push(c);
    return c;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Wait until `cond()` holds, polling; fails after `ms` with `what`. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A unique room name per test. */
let roomCounter = 0;
export function roomName(prefix = "t"): string {
  roomCounter++;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${roomCounter}`;
}

/** An HS256 JWT, for auth tests. */
export async function jwt(secret: string, claims: Record<string, unknown>): Promise<string> {
  const { createHmac } = await import("node:crypto");
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${sig}`;
}

/** The API key `API_CONFIG` gives every scope. */
export const API_KEY = "sdk-test-api-key-0123456789";

/** Config with an API key of every scope (prepend to a test's own config). */
export const API_CONFIG = `[[api.keys]]
name = "backend"
key = "${API_KEY}"
scopes = ["publish", "read", "state", "presence", "admin"]
`;

/** A server API call (README, "From your backend"): JSON in and out; throws on a non-2xx answer. */
export async function api(b: Broker, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${b.url}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const out = (await res.json()) as Record<string, unknown>;
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(out)}`);
  return out;
}
