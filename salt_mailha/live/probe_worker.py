"""The interpreter a balancer's ``mailha_health.probe`` starts for each probe round.

It imports core only, never Salt: on a loaded balancer (a User-mode Linux one in the lab) importing
Salt's pillar and crypto modules took 3-4 s of a 14 s deadline, and four probes at once missed it.
The request (the site pillar included) comes on stdin, never in argv; ``{service: {ok, detail}}``
goes to stdout.
"""

import json
import sys

from salt_mailha.core import health
from salt_mailha.core.model import load_site


def run(stream):
    request = json.load(stream)
    site = load_site({"mailha": request["mailha"]}, node=request["prober"])
    results = health.probe_all(site, health.targets(site, request["node"]), request["timeout"],
                               request["attempts"], request["interval"])
    return {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()}


if __name__ == "__main__":
    print(json.dumps(run(sys.stdin)))
