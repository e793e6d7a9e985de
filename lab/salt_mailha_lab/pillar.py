"""The lab pillar: the example site re-addressed into the lab's private subnets.

The topology is never forked: the example pillar is loaded and every address or network in it is
moved to the same host offset inside a lab subnet (``networks`` in the example's order get
10.99.0.0/24, 10.99.1.0/24, ...). Placeholder secrets (what ``core.model.placeholder_problems``
finds: ``CHANGE-ME``..., the base64 TSIG key) get random lab values of the same length (base64 of
as many random bytes for a base64 one), so length rules (keepalived's 8 characters) hold and the
lab's nodes, real ones, pass the placeholder gate.
"""
import base64
import ipaddress
import pathlib
import secrets
import string

import yaml

from salt_mailha import data
from salt_mailha.core.errors import ValidationError
from salt_mailha.core.model import placeholder_problems

EXAMPLE = pathlib.Path(data.paths()["pillar_example"])  # a pillar tree: mailha.sls + mailha_secrets/
LAB_SUPERNET = ipaddress.ip_network("10.99.0.0/16")
GATEWAY_OFFSET = 1  # the bridge address: salt-master and the host side of the lab
CLIENT_OFFSET = 250  # the drill's client namespace


def lab_networks(example_networks):
    """``{name: (example_net, lab_net)}``: the n-th example network becomes 10.99.n.0/24."""
    subnets = LAB_SUPERNET.subnets(new_prefix=24)
    out = {}
    for name, cidr in example_networks.items():
        src = ipaddress.ip_network(cidr, strict=False)
        if src.prefixlen < 24:
            raise ValidationError([(f"mailha:networks:{name}", f"{cidr} is larger than a /24; "
                                    "the lab maps each network onto one /24")])
        out[name] = (src, next(subnets))
    return out


def _readdress(value, nets, key, problems):
    """Move one string if it is an address or a network of the example; else keep it."""
    if not isinstance(value, str):
        return value
    try:
        if "/" in value:
            net = ipaddress.ip_network(value, strict=False)
            for src, dst in nets.values():
                if net == src:
                    return str(dst)
            problems.append((key, f"network {value} is not one of mailha:networks"))
            return value
        addr = ipaddress.ip_address(value)
    except ValueError:
        return value
    for src, dst in nets.values():
        if addr in src:
            offset = int(addr) - int(src.network_address)
            if offset in (GATEWAY_OFFSET, CLIENT_OFFSET):
                problems.append((key, f"{value} sits at host offset {offset}, which the lab "
                                      "keeps for its bridge/client; pick another address"))
            return str(dst.network_address + offset)
    problems.append((key, f"address {value} is in none of mailha:networks, so the lab cannot "
                          "move it into a lab subnet; put it inside one of the site's networks"))
    return value


def _secret_like(value, rng):
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        alphabet = string.ascii_letters + string.digits
        return "".join(rng.choice(alphabet) for _ in range(len(value)))
    return base64.b64encode(bytes(rng.randrange(256) for _ in range(len(raw)))).decode()


def _walk(obj, nets, key, problems, rng, placeholders):
    if isinstance(obj, dict):
        return {k: _walk(v, nets, f"{key}:{k}", problems, rng, placeholders) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_walk(v, nets, f"{key}:{i}", problems, rng, placeholders) for i, v in enumerate(obj)]
    if key in placeholders:
        return _secret_like(obj, rng)
    return _readdress(obj, nets, key, problems)


def lab_pillar(example, rng=None):
    """The lab's ``{"mailha": ...}`` pillar from the example's (pure; ``rng`` for secrets)."""
    rng = rng or secrets.SystemRandom()
    top = example.get("mailha") if isinstance(example, dict) else None
    if not isinstance(top, dict) or not isinstance(top.get("networks"), dict):
        raise ValidationError([("mailha:networks", "the example pillar has no networks mapping; "
                                "the lab re-addresses the site network by network")])
    nets = lab_networks(top["networks"])
    problems = []
    placeholders = {k for k, _ in placeholder_problems(top)}
    out = _walk(top, nets, "mailha", problems, rng, placeholders)
    if problems:
        raise ValidationError(problems)
    if isinstance(out.get("mail"), dict) and isinstance(out["mail"].get("vmail"), dict):
        # This host kernel has no NFS: the lab shares one directory into every mail node at the
        # export path (see Lab.binds) and the nodes bind-mount it at the vmail path instead.
        out["mail"]["vmail"]["fstype"] = "bind"
    if isinstance(out.get("mail"), dict) and "tls" not in out["mail"]:
        # The site's certificate is the operator's to supply; the lab serves Debian's snakeoil pair.
        # It is self-signed (its own CA) and the same file on every node (one shared base tree),
        # so the balancers' https checks trust it as the site CA.
        out["mail"]["tls"] = {"cert": "/etc/ssl/certs/ssl-cert-snakeoil.pem",
                              "key": "/etc/ssl/private/ssl-cert-snakeoil.key",
                              "ca": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}
    return {"mailha": out}


def load_example(path=EXAMPLE):
    """The example's whole pillar: every file of its tree merged."""
    return data.whole_pillar(path)


def gateway(lab_net):
    return str(ipaddress.ip_network(lab_net).network_address + GATEWAY_OFFSET)


def client_address(lab_net):
    return str(ipaddress.ip_network(lab_net).network_address + CLIENT_OFFSET)


def _project(whole, shape):
    """The values of ``whole`` at the key paths of ``shape``."""
    if isinstance(shape, dict) and isinstance(whole, dict):
        return {k: _project(whole[k], v) for k, v in shape.items() if k in whole}
    return whole


def _without(whole, shape):
    """``whole`` without the key paths of ``shape``."""
    out = dict(whole)
    for k, v in shape.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _without(out[k], v)
        else:
            out.pop(k, None)
    return out


def write_pillar_roots(pillar, root, example=EXAMPLE):
    """Write the lab's ``pillar`` under ``root`` in the example's shape: its ``top.sls`` (each node
    gets the secrets its roles use), the topology in ``mailha.sls`` and each secret in the file
    that holds it in the example. Files are 0600 (they hold the lab's secrets); returns the
    topology file."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    (root / "top.sls").write_text((pathlib.Path(example) / "top.sls").read_text())
    shapes = data.pillar_files(example)
    topology = pillar
    written = {}
    for name, shape in shapes.items():
        if name != data.SITE_SLS:
            topology = _without(topology, shape)
            written[name] = _project(pillar, shape)
    written[data.SITE_SLS] = topology
    for name, content in written.items():
        target = root.joinpath(*name.split(".")).with_suffix(".sls")
        target.parent.mkdir(mode=0o700, exist_ok=True)
        target.touch(mode=0o600)
        target.write_text("# generated by mailha-lab from pillar.example: do not edit\n"
                          + yaml.safe_dump(content, sort_keys=False, default_flow_style=False))
    return root / f"{data.SITE_SLS}.sls"
