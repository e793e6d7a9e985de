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

from salt_mailha import data as mailha_data
from salt_mailha.core import render
from salt_mailha.core.model import parse_site

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = mailha_data.example_pillar()["mailha"]


def generated(total):
    """The example site grown to ``total`` nodes: 2 lb, 1 dns, 1 filer/quorum, db and mail nodes
    (an even number of db so that db + quorum voters stay odd)."""
    data = copy.deepcopy(EXAMPLE)
    # A /16 around the example's 192.0.2.0/24 so its fixed nodes stay valid (rendered only).
    data["networks"] = {"public": "192.0.0.0/16", "private": "10.1.0.0/16"}
    data["vips"]["mail"]["address"] = "192.0.255.21"
    data["vips"]["db"]["address"] = "192.0.255.22"
    fixed = {k: data["nodes"][k] for k in ("ns1", "filer1", "lb1", "lb2")}
    rest = total - len(fixed)
    dbs = max(2, (rest // 3) // 2 * 2)
    nodes = dict(fixed)
    for i in range(rest):
        role, num = ("db", i + 1) if i < dbs else ("mail", i - dbs + 1)
        host = 20 + i
        nodes[f"{role}{num}"] = {"roles": [role], "addresses": {
            "public": f"192.0.{10 + host // 250}.{host % 250 + 2}", "private": f"10.1.{10 + host // 250}.{host % 250 + 2}"}}
    data["nodes"] = nodes
    data["dns"]["mx"] = {n: 10 for n in nodes if n.startswith("mail")}
    return data


def run_once(data):
    """(validate seconds, render seconds, bytes rendered) for the whole site."""
    t = time.perf_counter()
    site = parse_site(data)
    t_valid = time.perf_counter() - t
    size = 0
    for node in site.nodes:
        for art in render.artifacts_for(site, node):
            size += len(art.render(site, node))
    return t_valid, time.perf_counter() - t - t_valid, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    sites = [("example", EXAMPLE), ("generated-30", generated(30)), ("generated-300", generated(300))]
    run_once(EXAMPLE)  # warm the template cache, as a long-running minion would be
    print(f"{'site':<15} {'nodes':>5} {'median s':>9} {'p95 s':>8} {'validate s':>10} {'ms/node':>8} "
          f"{'bytes':>9} {'us/KB':>6}")
    for name, data in sites:
        runs = [run_once(data) for _ in range(args.runs)]
        totals = sorted(v + r for v, r, _ in runs)
        med = statistics.median(totals)
        p95 = totals[max(0, int(round(0.95 * len(totals))) - 1)]
        valid = statistics.median(v for v, _, _ in runs)
        size = runs[0][2]
        n = len(data["nodes"])
        # render time per KB of output: flat means rendering grows with what it writes (mirror
        # mode lists every LDAP provider on every mail node, so bytes grow with mail nodes squared)
        per_kb = 1e6 * statistics.median(r for _, r, _ in runs) / (size / 1024)
        print(f"{name:<15} {n:>5} {med:>9.4f} {p95:>8.4f} {valid:>10.4f} {1000 * med / n:>8.3f} "
              f"{size:>9} {per_kb:>6.1f}")


if __name__ == "__main__":
    main()
