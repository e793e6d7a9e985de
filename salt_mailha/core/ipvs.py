"""IPVS: parsers of ``ipvsadm`` output, argument validation, and the diff against the model.

Pure Python (no salt). The execution module ``mailha_ipvs`` runs ipvsadm with argv lists built
here, from values validated here, and hands the output to the parsers here.

Parsers are tested on real output captured from a Debian 6.1 kernel in a qemu guest and from a
7.2 User-mode Linux kernel (``tests/unit/data/ipvs/``): ``ipvsadm -Ln`` (weights, connection
counts, scheduler flags), ``ipvsadm -Ln --stats`` (cumulative counters) and ``ipvsadm -S -n``
(the restorable rule form).
"""
import ipaddress
import re
from dataclasses import dataclass, field, replace

from salt_mailha.core.errors import ParseError, ValidationError

#: ipvsadm's protocol words -> our names, and our names -> the ipvsadm service option.
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "FWM": "fwmark"}
SERVICE_OPTION = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service", "fwmark": "-f"}
#: ``-Ln`` forward column -> our names -> the ipvsadm real-server option.
FORWARDS = {"Route": "dr", "Masq": "nat", "Tunnel": "tunnel", "Local": "dr"}
FORWARD_OPTION = {"dr": "-g", "nat": "-m", "tunnel": "-i"}
SAVE_FORWARD = {"-g": "dr", "-m": "nat", "-i": "tunnel"}
SCHEDULERS = frozenset(
    {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh"}
)
WEIGHT_MAX = 65535  # ipvsadm: "illegal weight specified" outside 0..65535


@dataclass(frozen=True)
class RealServer:
    address: str
    port: int
    forward: str = "dr"
    weight: int = 1
    active: int = 0
    inactive: int = 0

    @property
    def key(self):
        return endpoint(self.address, self.port)

    def as_dict(self):
        return {"address": self.address, "port": self.port, "forward": self.forward,
                "weight": self.weight, "active": self.active, "inactive": self.inactive}


@dataclass(frozen=True)
class VirtualService:
    protocol: str  # tcp | udp | sctp | fwmark
    address: str = None  # None for fwmark services
    port: int = 0
    fwmark: int = None
    scheduler: str = "wlc"
    persistent: int = None  # seconds, or None
    options: tuple = ()  # other flags as printed (ops, mask ..., pe ...)
    real_servers: tuple = field(default=())
    schedflags: tuple = ()  # scheduler flags (ipvsadm -b), sorted: ("sh-fallback", "sh-port")

    @property
    def key(self):
        """``tcp:192.0.2.21:80``, ``tcp:[2001:db8::1]:25``, ``fwmark:7``."""
        if self.protocol == "fwmark":
            return f"fwmark:{self.fwmark}"
        return f"{self.protocol}:{endpoint(self.address, self.port)}"

    def real(self, address, port):
        for r in self.real_servers:
            if r.address == address and r.port == port:
                return r
        return None

    def as_dict(self):
        return {"key": self.key, "protocol": self.protocol, "address": self.address,
                "port": self.port, "fwmark": self.fwmark, "scheduler": self.scheduler,
                "persistent": self.persistent, "schedflags": list(self.schedflags),
                "options": list(self.options),
                "real_servers": [r.as_dict() for r in self.real_servers]}


def endpoint(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _split_endpoint(text, what):
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([0-9.]+):(\d+)", text)
    if not m:
        raise ParseError(f"ipvsadm output: cannot read {what} address:port {text!r}")
    addr, port = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return str(ipaddress.ip_address(addr)), int(port)


# --------------------------------------------------------------------------------------------
# parsers

_SERVICE_RE = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+)\s*(.*)$")
_REAL_RE = re.compile(r"^\s+->\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")


def _service_head(proto_word, target):
    protocol = PROTOCOLS[proto_word]
    if protocol == "fwmark":
        if not target.isdigit():
            raise ParseError(f"ipvsadm output: fwmark service with mark {target!r}")
        return {"protocol": protocol, "fwmark": int(target)}
    address, port = _split_endpoint(target, "virtual service")
    return {"protocol": protocol, "address": address, "port": port}


def parse_list(text):
    """Parse ``ipvsadm -Ln`` into a list of :class:`VirtualService` (in table order).

    Raises :class:`ParseError` on any line it does not understand, so a format change is loud.
    """
    services = []
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            _list_line(services, line, lineno)
        except ParseError as exc:
            if str(exc).startswith("ipvsadm -Ln line"):
                raise
            raise ParseError(f"ipvsadm -Ln line {lineno}: {exc}") from None
    return services


def _list_line(services, line, lineno):
    current = services[-1] if services else None
    if not line.strip() or line.startswith(("IP Virtual Server", "Prot LocalAddress")) or (
        line.lstrip().startswith("-> RemoteAddress")
    ):
        return
    m = _SERVICE_RE.match(line)
    if m:
        head = _service_head(m.group(1), m.group(2))
        words = m.group(3).split()
        if not words:
            raise ParseError(f"ipvsadm -Ln line {lineno}: no scheduler in {line!r}")
        scheduler, rest = words[0], words[1:]
        schedflags = ()
        if rest and rest[0].startswith("(") and rest[0].endswith(")"):  # "sh (sh-fallback,sh-port)"
            schedflags = _schedflags(rest[0][1:-1], lineno)
            rest = rest[1:]
        persistent = None
        if "persistent" in rest:
            i = rest.index("persistent")
            persistent = int(rest[i + 1])
            rest = rest[:i] + rest[i + 2:]
        services.append(VirtualService(**head, scheduler=scheduler, persistent=persistent,
                                       options=tuple(rest), schedflags=schedflags))
        return
    m = _REAL_RE.match(line)
    if m and current is not None:
        address, port = _split_endpoint(m.group(1), "real server")
        if m.group(2) not in FORWARDS:
            raise ParseError(f"ipvsadm -Ln line {lineno}: unknown forwarding {m.group(2)!r}")
        real = RealServer(address, port, FORWARDS[m.group(2)], int(m.group(3)),
                          int(m.group(4)), int(m.group(5)))
        services[-1] = replace(current, real_servers=current.real_servers + (real,))
        return
    raise ParseError(f"ipvsadm -Ln line {lineno}: unexpected {line!r}")


_STATS_COLUMNS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
_COUNT_RE = r"(\d+[KMGT]?)"


def _count(word):
    units = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
    return int(word[:-1]) * units[word[-1]] if word[-1] in units else int(word)


def parse_stats(text):
    """Parse ``ipvsadm -Ln --stats`` (or ``--exact``): ``{service_key: {..., "real_servers":
    {endpoint: {...}}}}`` with the counters ``conns, inpkts, outpkts, inbytes, outbytes``.

    Without ``--exact`` ipvsadm abbreviates big numbers (``12K``); they are expanded (and so
    approximate). Use ``--exact`` where precision matters.
    """
    out = {}
    current = None
    line_re = re.compile(r"^(\s+->\s+)?(TCP|UDP|SCTP|FWM)?\s*(\S+)" + r"\s+" + r"\s+".join(
        [_COUNT_RE] * 5) + r"\s*$")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(("IP Virtual Server", "Prot LocalAddress")) or (
            line.lstrip().startswith("-> RemoteAddress")
        ):
            continue
        m = line_re.match(line)
        if not m or bool(m.group(1)) == bool(m.group(2)):
            raise ParseError(f"ipvsadm --stats line {lineno}: unexpected {line!r}")
        counters = dict(zip(_STATS_COLUMNS, (_count(m.group(i)) for i in range(4, 9)), strict=True))
        if m.group(2):
            key = VirtualService(**_service_head(m.group(2), m.group(3))).key
            current = out[key] = {**counters, "real_servers": {}}
        elif current is None:
            raise ParseError(f"ipvsadm --stats line {lineno}: real server before any service")
        else:
            address, port = _split_endpoint(m.group(3), "real server")
            current["real_servers"][endpoint(address, port)] = counters
    return out


def parse_save(text):
    """Parse ``ipvsadm -S -n`` (rule form: ``-A -t VIP:PORT -s rr`` / ``-a ... -r RIP:PORT -g -w 1``)."""
    services = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if words[0] not in ("-A", "-a") or len(words) < 3:
            raise ParseError(f"ipvsadm -S line {lineno}: unexpected {line!r}")
        opt, target = words[1], words[2]
        proto = {v: k for k, v in SERVICE_OPTION.items()}.get(opt)
        if proto is None:
            raise ParseError(f"ipvsadm -S line {lineno}: unknown service option {opt!r}")
        head = _service_head({"tcp": "TCP", "udp": "UDP", "sctp": "SCTP", "fwmark": "FWM"}[proto],
                             target)
        key = VirtualService(**head).key
        args = _pairs(words[3:], lineno)
        if words[0] == "-A":
            persistent = int(args.pop("-p")) if "-p" in args else None
            scheduler = args.pop("-s", "wlc")
            schedflags = _schedflags(args.pop("-b"), lineno) if "-b" in args else ()
            options = tuple(w for k, v in args.items() for w in ((k,) if v is True else (k, v)))
            services[key] = VirtualService(**head, scheduler=scheduler, persistent=persistent,
                                           options=options, schedflags=schedflags)
        else:
            if key not in services:
                raise ParseError(f"ipvsadm -S line {lineno}: real server for unknown service {key}")
            address, port = _split_endpoint(args.get("-r", ""), "real server")
            forward = next((SAVE_FORWARD[k] for k in SAVE_FORWARD if k in args), "dr")
            real = RealServer(address, port, forward, int(args.get("-w", 1)))
            vs = services[key]
            services[key] = replace(vs, real_servers=vs.real_servers + (real,))
    return list(services.values())


def _schedflags(text, lineno):
    flags = tuple(sorted(f for f in str(text).split(",") if f))
    if not flags or not all(re.fullmatch(r"[a-z0-9-]+", f) for f in flags):
        raise ParseError(f"ipvsadm line {lineno}: unreadable scheduler flags {text!r}")
    return flags


def _pairs(words, lineno):
    out = {}
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("-"):
            raise ParseError(f"ipvsadm -S line {lineno}: stray word {w!r}")
        if i + 1 < len(words) and not words[i + 1].startswith("-"):
            out[w] = words[i + 1]
            i += 2
        else:
            out[w] = True
            i += 1
    return out


def merge_stats(services, stats):
    """``[service.as_dict()]`` with each service and real server dict carrying its ``stats``."""
    out = []
    for vs in services:
        d = vs.as_dict()
        s = stats.get(vs.key, {})
        d["stats"] = {k: v for k, v in s.items() if k != "real_servers"}
        for r in d["real_servers"]:
            r["stats"] = s.get("real_servers", {}).get(endpoint(r["address"], r["port"]), {})
        out.append(d)
    return out


# --------------------------------------------------------------------------------------------
# argument validation: every value that reaches an ipvsadm argv goes through one of these


class ArgumentError(ValidationError):
    """A bad argument to an IPVS function (not a pillar problem): names the argument and the fix."""

    def render(self):
        return "; ".join(f"invalid argument {key}: {msg}" for key, msg in self.problems)


def _bad(field_name, message):
    return ArgumentError([(field_name, message)])


def check_address(value, field_name="address"):
    try:
        return str(ipaddress.ip_address(str(value).strip("[]")))
    except ValueError:
        raise _bad(field_name, f"{value!r} is not an IPv4/IPv6 address; give one like 192.0.2.21") from None


def check_port(value, field_name="port", allow_zero=False):
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).isdigit()):
        raise _bad(field_name, f"{value!r} is not a port number; give an integer {low}..65535")
    port = int(value)
    if not low <= port <= 65535:
        raise _bad(field_name, f"{port} is out of range; give an integer {low}..65535")
    return port


def check_weight(value, field_name="weight"):
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).isdigit()):
        raise _bad(field_name, f"{value!r} is not a weight; give an integer 0..{WEIGHT_MAX} "
                               "(0 drains: no new connections)")
    weight = int(value)
    if not 0 <= weight <= WEIGHT_MAX:
        raise _bad(field_name, f"{weight} is out of range; give an integer 0..{WEIGHT_MAX}")
    return weight


def check_protocol(value, field_name="protocol"):
    proto = str(value).lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise _bad(field_name, f"{value!r} is not a protocol; give tcp, udp or sctp")
    return proto


def check_scheduler(value, field_name="scheduler"):
    if value not in SCHEDULERS:
        raise _bad(field_name, f"{value!r} is not an IPVS scheduler; give one of "
                               f"{', '.join(sorted(SCHEDULERS))}")
    return value


def service_argv(protocol, address, port):
    """``["-t", "192.0.2.21:80"]`` from validated values."""
    protocol = check_protocol(protocol)
    return [SERVICE_OPTION[protocol], endpoint(check_address(address, "vip"), check_port(port))]


def edit_real_argv(service, real, weight):
    """argv (after ``ipvsadm``) that sets ``real``'s weight in ``service``, keeping its forwarding.

    ``ipvsadm -e`` without a forwarding flag silently switches the server to direct routing, so
    the current one is always passed. Weight 0 stays 0 (Salt's ``lvs`` turns it into 1).
    """
    weight = check_weight(weight)
    if service.protocol == "fwmark":
        svc = ["-f", str(int(service.fwmark))]
    else:
        svc = service_argv(service.protocol, service.address, service.port)
    target = endpoint(check_address(real.address, "server"), check_port(real.port, allow_zero=True))
    return ["-e", *svc, "-r", target, FORWARD_OPTION[real.forward], "-w", str(weight)]


def find_service(services, protocol, address, port):
    key = VirtualService(check_protocol(protocol), check_address(address, "vip"),
                         check_port(port)).key
    return next((vs for vs in services if vs.key == key), None)


# --------------------------------------------------------------------------------------------
# diff against what the model wants


def diff(have, want, ignore_weight_zero=True):
    """Differences between the live table ``have`` and the model's ``want`` (both lists of
    :class:`VirtualService`). Returns a list of ``{"kind", "service", "real"?, "have", "want"}``.

    kinds: ``service-missing``, ``service-unexpected``, ``scheduler``, ``schedflags``, ``persistent``,
    ``real-missing``, ``real-unexpected``, ``forward``, ``weight``. A real server at weight 0 in
    ``have`` is drained (by ldirectord's quiescent health check or an operator), not a difference,
    unless ``ignore_weight_zero`` is False.
    """
    out = []
    have_by, want_by = {v.key: v for v in have}, {v.key: v for v in want}
    for key, w in want_by.items():
        h = have_by.get(key)
        if h is None:
            out.append({"kind": "service-missing", "service": key, "have": None,
                        "want": w.as_dict()})
            continue
        for attr in ("scheduler", "schedflags", "persistent"):
            if getattr(h, attr) != getattr(w, attr):
                out.append({"kind": attr, "service": key, "have": getattr(h, attr),
                            "want": getattr(w, attr)})
        hr = {r.key: r for r in h.real_servers}
        for r in w.real_servers:
            cur = hr.pop(r.key, None)
            if cur is None:
                out.append({"kind": "real-missing", "service": key, "real": r.key, "have": None,
                            "want": r.weight})
                continue
            if cur.forward != r.forward:
                out.append({"kind": "forward", "service": key, "real": r.key,
                            "have": cur.forward, "want": r.forward})
            if cur.weight != r.weight and not (ignore_weight_zero and cur.weight == 0):
                out.append({"kind": "weight", "service": key, "real": r.key,
                            "have": cur.weight, "want": r.weight})
        for rk, cur in hr.items():
            out.append({"kind": "real-unexpected", "service": key, "real": rk,
                        "have": cur.weight, "want": None})
    for key in have_by.keys() - want_by.keys():
        out.append({"kind": "service-unexpected", "service": key,
                    "have": have_by[key].as_dict(), "want": None})
    return out
