"""Validation is one complete gate: whatever ``parse_site`` accepts, every node renders.

Sites are generated as a fuzzer would (seeded): roles dealt to nodes at random, sections and
services dropped, numbers and choices changed. For each one the model either refuses it with
problems that each name a pillar key, or every file and plan the formula's states compute for
every node is produced without an error. A site that passes validation and then fails at render
time (after other files were written) is exactly what this catches.
"""

import copy
import random

import pytest

from salt_mailha import data
from salt_mailha.core import dns, galera, lb, ldap, mail, render
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import ROLES, parse_site
from tests.support.example import IREDMAIL

EXAMPLE = data.example_pillar()["mailha"]
SEED, SITES = 20261207, 400


def _deal_roles(rng, d):
    for node in d["nodes"].values():
        node["roles"] = rng.sample(ROLES, rng.choice((1, 1, 1, 2)))


def _drop(path):
    def mutate(rng, d):
        *parents, leaf = path.split(":")
        for k in parents:
            d = d.get(k) or {}
        d.pop(leaf, None)
    return mutate


def _choose(path, values):
    def mutate(rng, d):
        *parents, leaf = path.split(":")
        for k in parents:
            if not isinstance(d.get(k), dict):
                return  # the section was dropped
            d = d[k]
        d[leaf] = rng.choice(values)
    return mutate


def _drop_services(rng, d):
    for name in rng.sample(sorted(d["services"]), rng.randrange(len(d["services"]) + 1)):
        del d["services"][name]


def _iredmail(rng, d):
    if "mail" in d:
        d["mail"]["iredmail"] = copy.deepcopy(IREDMAIL)


MUTATIONS = [
    _deal_roles, _drop_services, _iredmail,
    *[_drop(p) for p in ("dns", "galera:monitor", "ldap:replication", "mail:tls", "vips:db", "vips:mail",
                         "dns:mx", "dns:names", "ldap", "galera", "keepalived", "mail", "ldirectord")],
    _choose("keepalived:vrrp_version", (2, 3)), _choose("keepalived:priority_step", (1, 50, 100)),
    _choose("keepalived:priority_top", (2, 100, 254)), _choose("galera:sst_method", ("rsync", "mariabackup")),
    _choose("galera:arbitrator", ("none", "garbd")), _choose("galera:bootstrap_node", ("db1", "filer1", "mail1")),
    _choose("ldap:config_format", ("slapd.conf", "cn=config")), _choose("dns:updater", ("ns1", "mail1", "lb1")),
    _choose("vips:mail:real_servers", ("mail", "db", "lb")), _choose("mail:vmail:nfs_server", ("filer1", "mail2")),
    _choose("dns:mx", ({"mail1": 10}, {"mail1": 10, "mail2": 20}, {})),
    _choose("services:imaps:check", ("imaps", "connect", "mysql")),
]


def generated_sites():
    rng = random.Random(SEED)
    for _ in range(SITES):
        d = copy.deepcopy(EXAMPLE)
        d["keepalived"]["auth_pass"] = "vrrp-pw"  # secrets every choice above may call for
        d["galera"]["sst_password"] = "sst-pw"
        for mutate in rng.sample(MUTATIONS, rng.randrange(1, 5)):
            mutate(rng, d)
        yield d


def everything_the_states_compute(site, node):
    """Every file and plan the formula's states compute for ``node`` (states/*.py call these)."""
    out = [a.render(site, node) for a in render.artifacts_for(site, node)]
    out += [render.packages_for(sls, site, node) for sls in render.formula_for(site, node)]
    if node.has("lb"):
        out += [lb.render_keepalived_notify(site, node), lb.desired_table(site), lb.site_ca(site)]
    if any(node.has(v.real_servers) for v in site.vips.values()):
        out.append(lb.dr_wanted(site, node))
    if node.has("db") or node.has("quorum"):
        out.append(galera.render_galera_cnf(site, node))
    if node.has("garbd"):
        out.append(galera.garbd_argv(site, node))
    if node.has("mail"):
        out += [mail.mail_files(site, node), mail.mail_checks(site, node), mail.vmail_fstab_entry(site, node),
                mail.web_listeners(site, node), ldap.render_mirrormode(site), ldap.desired_cnconfig(site),
                ldap.render_cnconfig_ldif(site), ldap.base_entry_creator(site)]
        if site.mail.iredmail is not None:
            out += [mail.render_iredmail_config(site, node), mail.iredmail_environment(site, node)]
    if mail.serves_vmail(site, node):
        out.append(mail.vmail_exports_line(site, node))
    if site.dns is not None and (node.has("dns") or site.dns.updater == node.id):
        out += [dns.render_zone_seed(site), dns.desired_records(site)]
    return out


def test_whatever_the_model_accepts_every_node_renders():
    accepted, refused, failures = 0, 0, []
    for d in generated_sites():
        try:
            site = parse_site(d)
        except ValidationError as exc:
            refused += 1
            assert exc.problems and all(k.startswith("mailha") and m for k, m in exc.problems)
            continue
        accepted += 1
        for node in site.nodes:
            try:
                everything_the_states_compute(site, node)
            except MailhaError as exc:
                failures.append((sorted(n.roles for n in site.nodes), node.id, str(exc)[:300]))
    print(f"\n{SITES} generated sites: {accepted} accepted (every node rendered), {refused} refused")
    # the generator must reach both sides, or it tests nothing
    assert accepted >= SITES // 10 and refused >= SITES // 10, (accepted, refused)
    assert failures == [], failures[:5]


@pytest.mark.parametrize("node", [n for n in EXAMPLE["nodes"]])
def test_the_example_renders_on_every_node(node):
    site = parse_site(copy.deepcopy(EXAMPLE))
    assert everything_the_states_compute(site, site.node(node))
