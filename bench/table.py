#!/usr/bin/env python3
"""Turns bench/compare.sh's results.jsonl into a Markdown table: the median
and range over rounds of each broker, and ferrymq's ratio to the better
peer (above 1 is better for ferrymq, whichever way the metric points)."""

import json
import statistics
import sys
from collections import defaultdict

PEERS = ["mosquitto", "rumqttd"]

# (scenario, label, how to read the value, higher is better, unit format)
ROWS = [
    ("idle", "connect rate (conn/s)", lambda s: s["connect"]["per_second"], True, "{:,.0f}"),
    ("idle", "memory per idle connection (B)", lambda s: s.get("broker_rss_per_connection_bytes"), False, "{:,.0f}"),
    ("fanin-q0-16B", "fan-in 4→1, QoS 0, 16 B (msg/s)", lambda s: s["received_per_second"], True, "{:,.0f}"),
    ("fanin-q0-1024B", "fan-in 4→1, QoS 0, 1 KiB (msg/s)", lambda s: s["received_per_second"], True, "{:,.0f}"),
    ("fanin-q1-16B", "fan-in 4→1, QoS 1, 16 B (msg/s)", lambda s: s["received_per_second"], True, "{:,.0f}"),
    ("fanin-q1-1024B", "fan-in 4→1, QoS 1, 1 KiB (msg/s)", lambda s: s["received_per_second"], True, "{:,.0f}"),
    ("fanout-q0", "fan-out 1→50, QoS 0 (deliveries/s)", lambda s: s["received_per_second"], True, "{:,.0f}"),
    ("latency", "latency p50 at 1k msg/s, QoS 1 (µs)", lambda s: s["latency_us"]["p50"], False, "{:,.0f}"),
    ("latency", "latency p99 (µs)", lambda s: s["latency_us"]["p99"], False, "{:,.0f}"),
    ("latency", "latency p99.9 (µs)", lambda s: s["latency_us"]["p999"], False, "{:,.0f}"),
    ("memory", "RSS at start of load (MiB)", lambda s: s["start_kib"] / 1024, False, "{:,.1f}"),
    ("memory", "RSS peak (MiB)", lambda s: s["peak_kib"] / 1024, False, "{:,.1f}"),
    ("memory", "RSS after the load (MiB)", lambda s: s["end_kib"] / 1024, False, "{:,.1f}"),
]

TWO_CORES = [
    ("fanin-q0-16B", "fan-in QoS 0, 16 B"),
    ("fanin-q1-16B", "fan-in QoS 1, 16 B"),
    ("fanin-q0-1024B", "fan-in QoS 0, 1 KiB"),
    ("fanout-q0", "fan-out 1→50"),
]


def load(path):
    runs = defaultdict(list)
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line:
            r = json.loads(line)
            runs[(r["broker"], r["scenario"])].append(r["summary"])
    return runs


def values(runs, broker, scenario, read):
    out = []
    for s in runs.get((broker, scenario), []):
        if s.get("failed"):
            continue
        try:
            v = read(s)
        except (KeyError, TypeError):
            v = None
        if v is not None:
            out.append(float(v))
    return out


def cell(vals, fmt):
    if not vals:
        return "—"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(vals))}–{fmt.format(max(vals))})"


def ratio(ours, theirs, higher_better):
    if not ours or not theirs:
        return "—"
    best = max(theirs) if higher_better else min(theirs)
    mine = statistics.median(ours)
    if best == 0 or mine == 0:
        return "—"
    r = mine / best if higher_better else best / mine
    return f"{r:.2f}×"


def losses(runs, broker, defaults=False):
    lost = undelivered = errors = 0
    for (b, scenario), summaries in runs.items():
        if b != broker or not scenario.startswith(("fanin", "fanout", "latency")):
            continue
        if scenario.endswith("-defaults") != defaults:
            continue
        for s in summaries:
            lost += s.get("lost_acked", 0) or 0
            errors += s.get("errors", 0) or 0
            if scenario.startswith("fanin-q1") or scenario == "latency":
                undelivered += s.get("undelivered", 0) or 0
    return lost, undelivered, errors


def main():
    runs = load(sys.argv[1])
    brokers = ["ferrymq"] + PEERS
    print("| measurement | ferrymq | Mosquitto | rumqttd | ferrymq ÷ better peer |")
    print("|---|---|---|---|---|")
    for scenario, label, read, higher, fmt in ROWS:
        cols = [values(runs, b, scenario, read) for b in brokers]
        peers = [statistics.median(c) for c in cols[1:] if c]
        print(f"| {label} | " + " | ".join(cell(c, fmt) for c in cols)
              + f" | {ratio(cols[0], peers, higher)} |")
    cells = []
    for b in brokers:
        lost, undelivered, errors = losses(runs, b)
        cells.append(f"{lost:,} lost / {errors} errors")
    print("| acknowledged QoS 1 deliveries lost (all runs) | " + " | ".join(cells) + " | |")
    defaults = [r for r in ROWS if runs.get(("ferrymq", r[0] + "-defaults"))]
    if defaults:
        print()
        print("Each broker at its own defaults (a listener and anonymous access, "
              "no tuning line), the same load:")
        print()
        print("| measurement | ferrymq | Mosquitto | rumqttd | ferrymq ÷ better peer |")
        print("|---|---|---|---|---|")
        for scenario, label, read, higher, fmt in defaults:
            cols = [values(runs, b, scenario + "-defaults", read) for b in brokers]
            peers = [statistics.median(c) for c in cols[1:] if c]
            print(f"| {label} | " + " | ".join(cell(c, fmt) for c in cols)
                  + f" | {ratio(cols[0], peers, higher)} |")
        cells = []
        for b in brokers:
            lost, undelivered, errors = losses(runs, b, defaults=True)
            cells.append(f"{lost:,} lost / {errors} errors")
        print("| acknowledged QoS 1 deliveries lost (all runs) | " + " | ".join(cells) + " | |")
    two = [(s, l) for s, l in TWO_CORES if runs.get(("ferrymq", s + "-2cores"))]
    if two:
        print()
        print("ferrymq on both cores (load generator on the same two cores), "
              "against the best single-core figure of any broker:")
        print()
        print("| measurement | ferrymq, 2 cores | best on 1 core | ratio |")
        print("|---|---|---|---|")
        read = lambda s: s["received_per_second"]
        for scenario, label in two:
            mine = values(runs, "ferrymq", scenario + "-2cores", read)
            singles = [statistics.median(v) for v in
                       (values(runs, b, scenario, read) for b in brokers) if v]
            best = max(singles) if singles else 0
            r = f"{statistics.median(mine) / best:.2f}×" if mine and best else "—"
            print(f"| {label} (msg/s) | {cell(mine, '{:,.0f}')} | {best:,.0f} | {r} |")


if __name__ == "__main__":
    main()
