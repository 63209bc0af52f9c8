//! The SDK's codec and frame builders produce, byte for byte, every frame in
//! protocol/vectors/frames.json, and decode every one back to its value.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { decode, encode, parseServerFrame, req, withId, type Request } from "../../src/index.js";

interface Vector {
  dir: "client" | "server";
  name: string;
  value: Record<string, unknown>;
  hex: string;
}

const path = fileURLToPath(new URL("../../../../protocol/vectors/frames.json", import.meta.url));
const vectors = (JSON.parse(readFileSync(path, "utf8")) as { frames: Vector[] }).frames;

/** JSON value of the vectors to the value the codec handles: {"$bin": hex} becomes bytes. */
function fromJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromJson);
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === "$bin") return Uint8Array.from(Buffer.from(String(o["$bin"]), "hex"));
    return Object.fromEntries(keys.map((k) => [k, fromJson(o[k])]));
  }
  return v;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));

test("vectors file has both directions", () => {
  assert.ok(vectors.filter((v) => v.dir === "client").length >= 16);
  assert.ok(vectors.filter((v) => v.dir === "server").length >= 20);
});

for (const v of vectors) {
  test(`encode ${v.dir} ${v.name} byte for byte`, () => {
    assert.equal(hex(encode(fromJson(v.value))), v.hex);
  });
  test(`decode ${v.dir} ${v.name}`, () => {
    assert.deepEqual(decode(unhex(v.hex)), fromJson(v.value));
  });
}

/** The request builders, given the vectors' fields, must yield the vectors' exact bytes. */
/** Every field a client vector may carry, typed `never` so it fits any builder parameter. */
interface Fields {
  room: never; since: never; state: never; presence: never; info: never; data: never; mid: never;
  after: never; before: never; limit: never; prefix: never; key: never; value: never; ver: never; by: never; token: never;
  ephemeral: never; target: never;
  ttl_ms: never;
}

function build(v: Record<string, unknown>): Request {
  const o = fromJson(v) as Fields;
  switch (v["t"]) {
    case "sub":
      return req.sub(o.room, { since: o.since, state: o.state, presence: o.presence, info: o.info });
    case "unsub":
      return req.unsub(o.room);
    case "pub":
      if (v["ephemeral"] === true) return req.signal(o.room, o.data);
      return req.pub(o.room, o.data, o.mid);
    case "edit":
      return req.edit(o.room, o.target, o.data);
    case "redact":
      return req.redact(o.room, o.target);
    case "hist":
      return req.hist(o.room, { after: o.after, before: o.before, limit: o.limit });
    case "get":
      return req.get(o.room, o.key);
    case "list":
      return req.list(o.room, { prefix: o.prefix, after: o.after, limit: o.limit });
    case "put":
      return req.put(o.room, o.key, o.value, { ttlMs: o.ttl_ms, ephemeral: o.ephemeral });
    case "del":
      return req.del(o.room, o.key);
    case "cas":
      return req.cas(o.room, o.key, o.ver, o.value, { ttlMs: o.ttl_ms, ephemeral: o.ephemeral });
    case "incr":
      return req.incr(o.room, o.key, o.by);
    case "who":
      return req.who(o.room);
    case "ping":
      return req.ping();
    case "auth":
      return req.auth(o.token);
    default:
      throw new Error(`no builder for ${String(v["t"])}`);
  }
}

for (const v of vectors.filter((x) => x.dir === "client")) {
  test(`builder for client ${v.name} yields the vector bytes`, () => {
    const frame = withId(build(v.value), v.value["id"] as number);
    assert.equal(hex(encode(frame)), v.hex);
  });
}

for (const v of vectors.filter((x) => x.dir === "server")) {
  test(`parser accepts server ${v.name}`, () => {
    const f = parseServerFrame(decode(unhex(v.hex)));
    assert.ok(f !== undefined, "known frame kind");
    assert.equal(f.t, v.value["t"]);
    // Every field of the vector survives parsing (with bins as bytes).
    assert.deepEqual(JSON.parse(JSON.stringify(f, binToHex)), JSON.parse(JSON.stringify(fromJson(v.value), binToHex)));
  });
}

function binToHex(_k: string, val: unknown): unknown {
  return val instanceof Uint8Array ? { $bin: hex(val) } : val;
}

test("parser ignores unknown keys, reads nil as absent, skips unknown kinds", () => {
  const ack = parseServerFrame(decode(encode({ t: "ack", id: 1, seq: 2, dup: null, future: [1, 2] })));
  assert.deepEqual(ack, { t: "ack", id: 1, seq: 2 });
  assert.equal(parseServerFrame(decode(encode({ t: "from-the-future", x: 1 }))), undefined);
  assert.throws(() => parseServerFrame(decode(encode({ t: "ack", id: 1 }))), /seq/);
  assert.throws(() => parseServerFrame(decode(encode([1, 2]))), /not a map/);
});
