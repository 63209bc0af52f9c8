//! Cluster mode for the SDK's tests: a redis-server of the test's own (temp dir, loopback port;
//! Debian's redis-server, installed by .ci/run) and roomd nodes sharing it.
import { spawn, type ChildProcess } from "node:child_process";
import { createServer, Socket } from "node:net";
import { Broker, sleep, tempDir } from "./harness.js";

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a !== null ? res(a.port) : rej(new Error("no port"))));
    });
  });
}

async function pong(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = new Socket();
    s.setTimeout(500);
    s.once("error", () => res(false));
    s.once("timeout", () => {
      s.destroy();
      res(false);
    });
    s.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
    s.once("data", (d) => {
      s.destroy();
      res(d.toString().startsWith("+PONG"));
    });
  });
}

export class Redis {
  private constructor(
    readonly proc: ChildProcess,
    readonly port: number,
  ) {}

  static async start(): Promise<Redis> {
    const port = await freePort();
    const dir = tempDir("redis");
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--appendfsync", "always", "--save", ""];
    const proc = spawn("redis-server", args, { stdio: ["ignore", "ignore", "inherit"] });
    const r = new Redis(proc, port);
    for (let i = 0; i < 200; i++) {
      if (await pong(port)) return r;
      await sleep(25);
    }
    proc.kill("SIGKILL");
    throw new Error("redis-server did not start (Debian package redis-server; .ci/run installs it)");
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  stop(): void {
    this.proc.kill("SIGKILL");
  }
}

/** `n` roomd nodes on one Redis, with `extra` TOML appended to each node's config. */
export async function nodes(redis: Redis, n: number, extra = ""): Promise<Broker[]> {
  const out: Broker[] = [];
  for (let i = 0; i < n; i++) {
    const config = `[cluster]\nengine = "redis"\nredis_url = "${redis.url}"\nnode_id = "node${i}"\nnode_ttl_ms = 1500\nprobe_ms = 300\n${extra}`;
    out.push(await Broker.start({ config }));
  }
  return out;
}
