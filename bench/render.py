#!/usr/bin/env python3
"""Validate + render time for the example site and for generated sites of 30 and 300 nodes.

Prints, for each site, the median of several runs of parse_site() plus rendering every artifact
of every node, and the time per node (to see growth: the goal is 300 nodes in under 1 s, linear).
Usage: .venv/bin/python bench/render.py [--runs N]
"""

import argparse
import copy
import pathlib
import statistics
import time

import yaml

from salt_mailha.core import render
from salt_mailha.core.model import parse_site

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = yaml.safe_load((REPO / "pillar.example" / "mailha.sls").read_text())["mailha"]


def generated(total):
    """The example site grown to ``total`` nodes: 2 lb, 1 dns, 1 filer/quorum, db and mail nodes
    (an even number of db so that db + quorum voters stay odd)."""
    data = copy.deepcopy(EXAMPLE)
    data["networks"] = {"public": "1.1.0.0/16", "private": "10.1.0.0/16"}
    data["vips"]["mail"]["address"] = "1.1.255.21"
    data["vips"]["db"]["address"] = "1.1.255.22"
    fixed = {k: data["nodes"][k] for k in ("ns1", "filer1", "lb1", "lb2")}
    rest = total - len(fixed)
    dbs = max(2, (rest // 3) // 2 * 2)
    nodes = dict(fixed)
    for i in range(rest):
        role, num = ("db", i + 1) if i < dbs else ("mail", i - dbs + 1)
        host = 20 + i
        nodes[f"{role}{num}"] = {"roles": [role], "addresses": {
            "public": f"1.1.{host // 250}.{host % 250 + 2}", "private": f"10.1.{host // 250}.{host % 250 + 2}"}}
    data["nodes"] = nodes
    data["dns"]["mx"] = {n: 10 for n in nodes if n.startswith("mail")}
    return data


def run_once(data):
    site = parse_site(data)
    size = 0
    for node in site.nodes:
        for art in render.artifacts_for(site, node):
            size += len(art.render(site, node))
    return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sites = [("example", EXAMPLE), ("generated-30", generated(30)), ("generated-300", generated(300))]
    run_once(EXAMPLE)  # warm the template cache, as a long-running minion would be
    print(f"{'site':<15} {'nodes':>5} {'median s':>9} {'p95 s':>8} {'ms/node':>8} {'bytes':>9}")
    for name, data in sites:
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            size = run_once(data)
            times.append(time.perf_counter() - t)
        n = len(data["nodes"])
        med = statistics.median(times)
        p95 = sorted(times)[max(0, int(round(0.95 * len(times))) - 1)]
        print(f"{name:<15} {n:>5} {med:>9.4f} {p95:>8.4f} {1000 * med / n:>8.3f} {size:>9}")


if __name__ == "__main__":
    main()
