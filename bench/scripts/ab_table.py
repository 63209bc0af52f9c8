"""The side-by-side table of two sets of roomd-bench JSON lines (two builds, or one build two ways):
medians per cell, their ratio, roomd's ratio to nats in each (when nats ran), CPU per unit.
Usage: python3 ab_table.py A.jsonl B.jsonl LABEL_A LABEL_B"""
import json
import statistics as st
import sys


def load(path):
    rows = {}
    for line in open(path):
        d = json.loads(line)
        if d["scenario"] == "fanout":
            key = f"fanout subs={d['subs']} pubs={d['pubs']} size={d['size']}"
            val = (d["deliveries_per_s"], d["server_cpu_s_per_1m_deliveries"])
        else:
            key = f"durable concurrency={d['concurrency']}"
            val = (d["acks_per_s"], d["server_cpu_us_per_ack"])
        rows.setdefault((key, d["broker"]), []).append(val)
    return rows


def med(rows, i):
    return st.median(r[i] for r in rows)


a, b = load(sys.argv[1]), load(sys.argv[2])
la, lb = sys.argv[3], sys.argv[4]
print(f"| cell | roomd {la} | roomd {lb} | {lb}/{la} | roomd/nats {la} | roomd/nats {lb} "
      f"| CPU {la} | CPU {lb} | CPU {lb}/{la} |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for key in sorted({k for k, broker in a if broker == "roomd"}):
    ra, rb = a[(key, "roomd")], b[(key, "roomd")]
    na, nb = a.get((key, "nats")), b.get((key, "nats"))
    vs = lambda r, n: f"{med(r, 0) / med(n, 0):.2f}" if n else ""
    print(f"| {key} | {med(ra, 0):,.0f} | {med(rb, 0):,.0f} | {med(rb, 0) / med(ra, 0):.2f} "
          f"| {vs(ra, na)} | {vs(rb, nb)} | {med(ra, 1):.3f} | {med(rb, 1):.3f} "
          f"| {med(rb, 1) / med(ra, 1):.2f} |")
