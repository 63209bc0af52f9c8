/**
 * A TCP proxy in front of the broker whose "network" can be cut: every open connection is
 * destroyed and new ones are refused until it is restored. Simulates a Wi-Fi drop for a page
 * without touching the broker.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export class CuttableProxy {
  private readonly sockets = new Set<Socket>();
  private up = true;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetPort: number): Promise<CuttableProxy> {
    let self: CuttableProxy | undefined;
    const server = createServer((client) => {
      if (self === undefined || !self.up) {
        client.destroy();
        return;
      }
      const upstream = connect(targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        self.sockets.add(s);
        s.on("close", () => self?.sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    self = new CuttableProxy(server, address.port);
    return self;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Drop every connection (reset) and refuse new ones. */
  cut(): void {
    this.up = false;
    for (const s of this.sockets) s.resetAndDestroy();
    this.sockets.clear();
  }

  restore(): void {
    this.up = true;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
