#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus (fuzz/seeds/<target>/) and dictionary (fuzz/msgpack.dict)
from protocol/vectors/frames.json. Run from anywhere; the output is committed."""
import json
import os
import shutil
import struct

here = os.path.dirname(os.path.abspath(__file__))
vectors = json.load(open(os.path.join(here, "..", "protocol", "vectors", "frames.json")))
seeds = os.path.join(here, "seeds")
shutil.rmtree(seeds, ignore_errors=True)
for target in ("decode_client", "decode_server", "session"):
    os.makedirs(os.path.join(seeds, target))


def write(target, name, data):
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)


def framed(frames):
    return b"".join(struct.pack(">H", len(f)) + f for f in frames)


client = []
for v in vectors["frames"]:
    raw = bytes.fromhex(v["hex"])
    if v["dir"] == "client":
        client.append(raw)
        write("decode_client", v["name"], raw)
        write("session", v["name"], framed([raw]))
    else:
        write("decode_server", v["name"], raw)
# One session that sends every client vector in order, and one that sends them twice
# (duplicate subscriptions, repeated mids, a cas on a moved version).
write("session", "all-client-frames", framed(client))
write("session", "all-client-frames-twice", framed(client + client))


def mp_str(s):
    b = s.encode()
    return (bytes([0xA0 | len(b)]) if len(b) < 32 else bytes([0xD9, len(b)])) + b


words = set()
for v in vectors["frames"]:
    for k, val in v["value"].items():
        words.add(k)
        if k == "t":
            words.add(val)
with open(os.path.join(here, "msgpack.dict"), "w") as f:
    f.write("# MessagePack strings of every key and frame kind in the test vectors.\n")
    for w in sorted(words):
        f.write('"' + "".join("\\x%02x" % c for c in mp_str(w)) + '"\n')
