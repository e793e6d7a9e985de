"""Site facts for the formula: the validated model seen from this minion.

The SLS formula asks this module which roles the node has and which files it gets; every value
comes from ``salt_mailha.core``. Nothing here returns a secret: ``show`` redacts.
"""

from salt_mailha import glue
from salt_mailha.core import render
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import placeholder_problems
from salt_mailha.core.secret import redact

__virtualname__ = "mailha_site"


def __virtual__():
    return __virtualname__


def _site():
    return glue.site_from_pillar(__pillar__, __opts__)


def _gated_site():
    """The validated site for ``validate`` and ``state.apply mailha`` (``formula``): on a real node
    (not a rehearsal) the example's placeholder secrets are refused too, each by key, before
    anything is rendered or written (``test=True`` included: it shows what a run would do)."""
    site = _site()
    if not site.allow_placeholder_secrets and not rehearsal():
        problems = placeholder_problems(__pillar__.get("mailha"))
        if problems:
            raise ValidationError(problems)
    return site


def validate():
    """Validate the whole ``mailha`` pillar; raises with every problem, each naming its key.

    CLI Example:

    .. code-block:: bash

        salt '*' mailha_site.validate
    """
    site = _gated_site()
    return {"site": site.name, "nodes": len(site.nodes), "valid": True}


def roles(node=None):
    """Roles of this minion's node (or ``node``) in pillar order.

    CLI Example:

    .. code-block:: bash

        salt 'mail1' mailha_site.roles
    """
    site = _site()
    return list(glue.this_node(site, __opts__, node).roles)


def rehearsal():
    """True when files go under a scratch ``mailha_root``: the formula then writes files only and
    starts, stops or reconfigures no service (they would be this host's, not the rehearsed node's).

    CLI Example:

    .. code-block:: bash

        salt-call --local mailha_site.rehearsal pillar='{"mailha_root": "/tmp/x"}'
    """
    return glue.root(__opts__, __pillar__) != "/"


def packages(sls, node=None):
    """Debian packages formula file ``sls`` installs on this node.

    CLI Example:

    .. code-block:: bash

        salt 'mail1' mailha_site.packages mail
    """
    site = _site()
    return list(render.packages_for(sls, site, glue.this_node(site, __opts__, node)))


def formula(node=None):
    """The formula files (``mailha.<name>``) ``state.apply mailha`` includes for this node.

    CLI Example:

    .. code-block:: bash

        salt 'ns1' mailha_site.formula
    """
    site = _gated_site()
    return render.formula_for(site, glue.this_node(site, __opts__, node))


def artifacts(sls=None, node=None):
    """Files this node gets (id, path, mode), optionally only those managed by formula file ``sls``.

    CLI Example:

    .. code-block:: bash

        salt 'lb1' mailha_site.artifacts sls=lb
    """
    site = _site()
    n = glue.this_node(site, __opts__, node)
    return [
        {"id": a.id, "path": a.path, "mode": a.mode}
        for a in render.artifacts_for(site, n)
        if sls is None or a.sls == sls
    ]


def show(artifact, node=None):
    """The rendered text of one artifact for this node, secrets redacted.

    CLI Example:

    .. code-block:: bash

        salt 'lb1' mailha_site.show keepalived
    """
    site = _site()
    n = glue.this_node(site, __opts__, node)
    try:
        art = render.artifact(artifact)
        if not art.applies(site, n):
            raise MailhaError(f"{n.id} does not get {artifact} ({art.path}); its artifacts: "
                              f"{', '.join(a.id for a in render.artifacts_for(site, n)) or 'none'}")
        return redact(art.render(site, n), site.secrets())
    except MailhaError as exc:
        raise glue.CommandExecutionError(str(exc)) from None
