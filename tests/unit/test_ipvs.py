"""ipvsadm parsers on real output (tests/unit/data/ipvs/, captured in a qemu guest and in the
User-mode Linux guest by capture.sh there), argument validation, argv building and the diff
against the model."""
from dataclasses import replace
from pathlib import Path

import pytest

from salt_mailha.core import ipvs
from salt_mailha.core.errors import ParseError, ValidationError

DATA = Path(__file__).parent / "data" / "ipvs"
VIP = "10.99.88.100"


def read(name):
    return (DATA / name).read_text()


@pytest.fixture(scope="module")
def table():
    return {vs.key: vs for vs in ipvs.parse_list(read("ipvsadm-Ln.txt"))}


def test_list_reads_every_service_in_order():
    keys = [vs.key for vs in ipvs.parse_list(read("ipvsadm-Ln.txt"))]
    assert keys == [f"tcp:{VIP}:80", f"tcp:{VIP}:443", f"tcp:{VIP}:993", f"tcp:{VIP}:3306",
                    f"udp:{VIP}:53", "tcp:[2001:db8::100]:25", "fwmark:7"]


@pytest.mark.parametrize(
    "key,scheduler,persistent,reals",
    [
        (f"tcp:{VIP}:80", "rr", None,
         [("10.99.88.30", 80, "dr", 1, 0, 3), ("10.99.88.40", 80, "dr", 1, 1, 3)]),
        (f"tcp:{VIP}:443", "sh", 300,
         [("10.99.88.30", 443, "dr", 2, 0, 0), ("10.99.88.40", 443, "dr", 0, 0, 0)]),
        (f"tcp:{VIP}:993", "wrr", None, []),
        (f"tcp:{VIP}:3306", "wrr", None,
         [("10.99.88.30", 3306, "nat", 5, 0, 0), ("10.99.88.40", 3306, "tunnel", 1, 0, 0)]),
        (f"udp:{VIP}:53", "wlc", None, [("10.99.88.30", 53, "dr", 1, 0, 0)]),
        ("tcp:[2001:db8::100]:25", "wrr", None, [("2001:db8::30", 25, "nat", 1, 0, 0)]),
        ("fwmark:7", "lc", None, [("10.99.88.40", 0, "dr", 3, 0, 0)]),
    ],
    ids=["dr-rr-counts", "persistent-weight0", "no-reals", "nat-tunnel", "udp", "ipv6", "fwmark"],
)
def test_list_service_details(table, key, scheduler, persistent, reals):
    vs = table[key]
    assert (vs.scheduler, vs.persistent) == (scheduler, persistent)
    got = [(r.address, r.port, r.forward, r.weight, r.active, r.inactive) for r in vs.real_servers]
    assert got == reals


def test_list_empty_table_and_single_service():
    assert ipvs.parse_list(read("ipvsadm-Ln-empty.txt")) == []
    (one,) = ipvs.parse_list(read("ipvsadm-Ln-t-one.txt"))
    assert one.key == f"tcp:{VIP}:80" and len(one.real_servers) == 2


def test_save_form_matches_list_form():
    saved = ipvs.parse_save(read("ipvsadm-Sn.txt"))
    listed = ipvs.parse_list(read("ipvsadm-Ln.txt"))
    strip = lambda vs: (vs.key, vs.scheduler, vs.persistent,  # noqa: E731
                        [(r.key, r.forward, r.weight) for r in vs.real_servers])
    assert sorted(map(strip, saved)) == sorted(map(strip, listed))
    assert ipvs.parse_save(read("ipvsadm-Sn-empty.txt")) == []


def test_save_keeps_tunnel_options():
    mysql = next(vs for vs in ipvs.parse_save(read("ipvsadm-Sn.txt")) if vs.port == 3306)
    assert [r.forward for r in mysql.real_servers] == ["nat", "tunnel"]


@pytest.mark.parametrize("name", ["ipvsadm-Ln-stats.txt", "ipvsadm-Ln-exact-stats.txt"])
def test_stats(name):
    stats = ipvs.parse_stats(read(name))
    http = stats[f"tcp:{VIP}:80"]
    assert (http["conns"], http["inpkts"], http["inbytes"]) == (7, 38, 2488)
    assert http["real_servers"]["10.99.88.30:80"]["conns"] == 3
    assert http["real_servers"]["10.99.88.40:80"]["conns"] == 4
    assert stats["fwmark:7"]["real_servers"] == {"10.99.88.40:0": dict.fromkeys(
        ("conns", "inpkts", "outpkts", "inbytes", "outbytes"), 0)}
    assert stats[f"tcp:{VIP}:993"]["real_servers"] == {}


def test_stats_abbreviated_counts():
    text = read("ipvsadm-Ln-stats.txt").replace(
        "     2488        0", "      12K        0", 1)
    assert ipvs.parse_stats(text)[f"tcp:{VIP}:80"]["inbytes"] == 12000


def test_merge_stats_attaches_counters():
    merged = ipvs.merge_stats(ipvs.parse_list(read("ipvsadm-Ln.txt")),
                              ipvs.parse_stats(read("ipvsadm-Ln-stats.txt")))
    assert merged[0]["stats"]["conns"] == 7
    assert merged[0]["real_servers"][1]["stats"]["conns"] == 4


@pytest.mark.parametrize(
    "text",
    [
        "TCP  10.99.88.100:80 rr\n  -> 10.99.88.30:80   Bounce 1 0 0\n",
        "TCP  10.99.88.100 rr\n",
        "TCP  10.99.88.100:80\n",
        "garbage line\n",
        read("ipvsadm-Ln-t-missing.txt"),
    ],
    ids=["unknown-forward", "no-port", "no-scheduler", "garbage", "no-such-service-message"],
)
def test_list_refuses_what_it_does_not_understand(text):
    with pytest.raises(ParseError, match="ipvsadm -Ln line"):
        ipvs.parse_list(text)


@pytest.mark.parametrize(
    "func,value,field,needle",
    [
        (ipvs.check_address, "192.0.2", "address", "not an IPv4/IPv6 address"),
        (ipvs.check_address, "192.0.2.21; rm -rf /", "address", "not an IPv4/IPv6 address"),
        (ipvs.check_port, 0, "port", "out of range"),
        (ipvs.check_port, 65536, "port", "out of range"),
        (ipvs.check_port, "80 -x", "port", "not a port number"),
        (ipvs.check_port, True, "port", "not a port number"),
        (ipvs.check_weight, -1, "weight", "out of range"),
        (ipvs.check_weight, 65536, "weight", "out of range"),
        (ipvs.check_weight, 1.5, "weight", "not a weight"),
        (ipvs.check_protocol, "icmp", "protocol", "give tcp, udp or sctp"),
        (ipvs.check_scheduler, "random", "scheduler", "not an IPVS scheduler"),
    ],
    ids=["short-ip", "injection", "port0", "port-high", "port-junk", "port-bool", "weight-neg",
         "weight-high", "weight-float", "protocol", "scheduler"],
)
def test_validation_errors_name_field_and_fix(func, value, field, needle):
    with pytest.raises(ValidationError) as err:
        func(value)
    ((key, message),) = err.value.problems
    assert key == field and needle in message


def test_validation_normalises():
    assert ipvs.check_address("[2001:DB8::0:1]") == "2001:db8::1"
    assert ipvs.check_port("443") == 443
    assert ipvs.check_port(0, allow_zero=True) == 0
    assert ipvs.check_weight("0") == 0


def test_edit_argv_keeps_forwarding_and_zero(table):
    mysql = table[f"tcp:{VIP}:3306"]
    assert ipvs.edit_real_argv(mysql, mysql.real_servers[0], 0) == [
        "-e", "-t", f"{VIP}:3306", "-r", "10.99.88.30:3306", "-m", "-w", "0"]
    v6 = table["tcp:[2001:db8::100]:25"]
    assert ipvs.edit_real_argv(v6, v6.real_servers[0], 7) == [
        "-e", "-t", "[2001:db8::100]:25", "-r", "[2001:db8::30]:25", "-m", "-w", "7"]
    fwm = table["fwmark:7"]
    assert ipvs.edit_real_argv(fwm, fwm.real_servers[0], 2)[:3] == ["-e", "-f", "7"]
    with pytest.raises(ValidationError):
        ipvs.edit_real_argv(mysql, mysql.real_servers[0], "0 -x")


def test_diff_against_model(table):
    have = [table[f"tcp:{VIP}:80"], table[f"tcp:{VIP}:443"], table["fwmark:7"]]
    want = [
        ipvs.VirtualService("tcp", VIP, 80, scheduler="wrr", real_servers=(
            ipvs.RealServer("10.99.88.30", 80, "dr", 1), ipvs.RealServer("10.99.88.50", 80))),
        ipvs.VirtualService("tcp", VIP, 443, scheduler="sh", persistent=300, real_servers=(
            ipvs.RealServer("10.99.88.30", 443, "dr", 1),
            ipvs.RealServer("10.99.88.40", 443, "dr", 1))),
        ipvs.VirtualService("tcp", VIP, 25, scheduler="wrr"),
    ]
    got = {(d["kind"], d["service"], d.get("real")): (d["have"], d["want"])
           for d in ipvs.diff(have, want) if d["kind"] not in ("service-missing",
                                                                "service-unexpected")}
    assert got == {
        ("scheduler", f"tcp:{VIP}:80", None): ("rr", "wrr"),
        ("real-missing", f"tcp:{VIP}:80", "10.99.88.50:80"): (None, 1),
        ("real-unexpected", f"tcp:{VIP}:80", "10.99.88.40:80"): (1, None),
        # 443: .30 has weight 2 where the model says 1; .40 at weight 0 is drained, not a diff
        ("weight", f"tcp:{VIP}:443", "10.99.88.30:443"): (2, 1),
    }
    kinds = {(d["kind"], d["service"]) for d in ipvs.diff(have, want)}
    assert ("service-missing", f"tcp:{VIP}:25") in kinds
    assert ("service-unexpected", "fwmark:7") in kinds
    strict = ipvs.diff(have, want, ignore_weight_zero=False)
    assert any(d["kind"] == "weight" and d["real"] == "10.99.88.40:443" for d in strict)
    assert ipvs.diff(have, have) == []


def test_scheduler_flags_in_both_forms():
    """Captured in the UML guest (kernel 7.2.7, ipvsadm 1.31): ``sh (sh-fallback)`` in -Ln,
    ``-b sh-fallback`` in -Sn; flags before ``persistent`` in -Ln, after ``-p`` in -Sn."""
    listed = {vs.key: vs for vs in ipvs.parse_list(read("ipvsadm-Ln-schedflags.txt"))}
    saved = {vs.key: vs for vs in ipvs.parse_save(read("ipvsadm-Sn-schedflags.txt"))}
    for table in (listed, saved):
        assert {k: (vs.scheduler, vs.schedflags, vs.persistent, vs.options) for k, vs in table.items()} == {
            "tcp:192.0.2.21:80": ("sh", ("sh-fallback",), None, ()),
            "tcp:192.0.2.21:443": ("sh", ("sh-fallback", "sh-port"), 300, ()),
            "tcp:192.0.2.21:993": ("wrr", (), None, ()),
        }
    assert [r.weight for r in listed["tcp:192.0.2.21:80"].real_servers] == [0, 1]
    assert listed["tcp:192.0.2.21:80"].as_dict()["schedflags"] == ["sh-fallback"]
    with pytest.raises(ParseError, match="scheduler flags"):
        ipvs.parse_list("TCP  192.0.2.21:80 sh (sh fallback)\n".replace("sh fallback", "sh;x"))


def test_diff_reports_a_missing_scheduler_flag():
    have = ipvs.parse_list(read("ipvsadm-Ln-schedflags.txt"))[:1]
    want = [ipvs.VirtualService("tcp", "192.0.2.21", 80, scheduler="sh", schedflags=(), real_servers=(
        ipvs.RealServer("192.0.2.17", 80), ipvs.RealServer("192.0.2.18", 80)))]
    assert ipvs.diff(have, want) == [{"kind": "schedflags", "service": "tcp:192.0.2.21:80",
                                      "have": ("sh-fallback",), "want": ()}]
    assert ipvs.diff(have, [replace(want[0], schedflags=("sh-fallback",))]) == []
