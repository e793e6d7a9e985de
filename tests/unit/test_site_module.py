"""``mailha_site.show`` of an artifact the node does not get is a refusal that names the node's
artifacts, not a traceback (a balancer has no slapd.conf, and no LDAP secret to render one)."""
import pytest
from salt.exceptions import CommandExecutionError

from salt_mailha.modules import mailha_site
from tests.support.example import example_pillar


@pytest.mark.parametrize("node,artifact", [("lb1", "slapd"), ("lb1", "bind-tsig"), ("db1", "slapd-default"),
                                           ("mail1", "keepalived"), ("ns1", "galera")])
def test_show_refuses_an_artifact_the_node_does_not_get(monkeypatch, node, artifact):
    pillar = example_pillar()
    monkeypatch.setattr(mailha_site, "__pillar__", pillar, raising=False)
    monkeypatch.setattr(mailha_site, "__opts__", {"id": node}, raising=False)
    with pytest.raises(CommandExecutionError, match=f"{node} does not get {artifact} .*its artifacts: ") as err:
        mailha_site.show(artifact)
    assert not [s for s in ("CHANGE-ME", "Q0hBTkdF") if s in str(err.value)]
    assert mailha_site.show(mailha_site.artifacts()[0]["id"])  # what it does get renders
