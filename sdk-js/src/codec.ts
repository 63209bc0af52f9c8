/**
 * MessagePack encoding of frames (SPEC.md section 2). Maps are written in the insertion order
 * of their keys, which the frame builders in `frames.ts` keep canonical, so the bytes match
 * `protocol/vectors/frames.json`. Integers take their shortest form; `bin` is a `Uint8Array`;
 * `undefined` fields are left out (SPEC: an absent field and `nil` mean the same). Integers
 * beyond 2^53 are not safe in JavaScript numbers; SPEC.md keeps protocol integers below it.
 */
import { Decoder, Encoder } from "@msgpack/msgpack";

/** Any value MessagePack can carry between roomd and the SDK. */
export type Value = null | boolean | number | string | Uint8Array | Value[] | { [key: string]: Value };

// Not useBigInt64: with it, @msgpack/msgpack writes numbers above 2^32 as float64, which would
// turn integers (timestamps, epochs, counters) into floats on the wire.
const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/** Encode one frame (or any value) to MessagePack bytes. */
export function encode(value: unknown): Uint8Array {
  return encoder.encode(value);
}

/** Decode exactly one MessagePack value. Throws on malformed input or trailing bytes. */
export function decode(bytes: Uint8Array): Value {
  return decoder.decode(bytes) as Value;
}

/** The encoded size of a value in bytes, as the server measures `value` and `info` limits. */
export function encodedSize(value: unknown): number {
  return encoder.encode(value).byteLength;
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** UTF-8 bytes of a string. */
export function textToBytes(text: string): Uint8Array {
  return utf8.encode(text);
}

/** The string of UTF-8 bytes (invalid sequences become U+FFFD). */
export function bytesToText(bytes: Uint8Array): string {
  return fromUtf8.decode(bytes);
}

/** Byte length of a string in UTF-8, without allocating. */
export function utf8Length(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && isLowSurrogate(text.charCodeAt(i + 1))) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}
