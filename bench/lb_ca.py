"""Figures of the balancers' https health checks with and without the site CA (mail:tls:ca).

    .venv/bin/python bench/lb_ca.py [--rounds 200]

A real TLS server on 127.0.0.1 (Python's ssl, a snakeoil-style certificate: tests/support/tls.py)
serves the health page. Measured per check, median and p95 in milliseconds:

* the beacon's probe (``core.health.probe``, a new connection and TLS context each time): no
  verification (no CA), and the chain verified against the CA;
* ldirectord's check as check_http does it (a new LWP::UserAgent per request, in one perl process):
  the system store (fails: self-signed) and PERL_LWP_SSL_CA_FILE (the drop-in's setting);
* ``core.lb.check_ca_bundle`` (what mailha_ldirectord.ca_present runs once per state run).

Never asserted anywhere: machines differ.
"""
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from salt_mailha.core import health, lb  # noqa: E402
from tests.support import tls  # noqa: E402

PERL = r"""
use strict; use LWP::UserAgent; use Time::HiRes qw(time);
my ($url, $n) = @ARGV; my ($ok, @ms) = (0);
for (1..$n) {
    my $t = time; my $ua = LWP::UserAgent->new(ssl_opts => { verify_hostname => 0 });
    my $res = $ua->get($url); push @ms, (time - $t) * 1000; $ok++ if $res->is_success;
}
print join(" ", $ok, @ms), "\n";
"""


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def line(name, samples, note=""):
    print(f"{name:<48} median {statistics.median(samples):7.2f} ms   p95 {pct(samples, 95):7.2f} ms  {note}")


def timed(fn, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cert, key = tls.snakeoil(d)
        srv = tls.HttpsServer(cert, key, {"/ldirectord.txt": "ldirectord\n"})
        try:
            for ca in (None, str(cert)):
                results = []
                samples = timed(lambda ca=ca, results=results: results.append(health.probe(
                    "127.0.0.1", srv.port, "https", timeout=5, http_path="/ldirectord.txt",
                    http_expect="ldirectord", ca_file=ca)), args.rounds)
                line(f"beacon https probe, {'CA ' + os.path.basename(ca) if ca else 'no verification'}",
                     samples, f"{sum(r.ok for r in results)}/{len(results)} up")
            url = f"https://127.0.0.1:{srv.port}/ldirectord.txt"
            for ca in (None, str(cert)):
                env = {"PATH": "/usr/bin:/bin"} | ({"PERL_LWP_SSL_CA_FILE": ca} if ca else {})
                out = subprocess.run(["perl", "-e", PERL, url, str(args.rounds)], env=env, capture_output=True,
                                     text=True, check=True, timeout=600).stdout.split()
                line(f"ldirectord-style LWP check, {'PERL_LWP_SSL_CA_FILE' if ca else 'system store'}",
                     [float(x) for x in out[1:]], f"{out[0]}/{args.rounds} up")
        finally:
            srv.close()
        line("check_ca_bundle (ca_present)", timed(lambda: lb.check_ca_bundle(str(cert)), args.rounds))


if __name__ == "__main__":
    main()
