"""Files rendered from the site model, written only where they differ.

.. code-block:: yaml

    mailha-file-keepalived:
      mailha_site.rendered:
        - name: /etc/keepalived/keepalived.conf
        - artifact: keepalived

The content is computed on the minion from the pillar (so it never travels through the compiled
state data); the diff in ``changes`` has every secret replaced by ``<redacted>``. Paths are
prefixed by minion config ``mailha_root`` when set (a scratch root for rehearsals and tests).
"""
import re

from salt_mailha import glue
from salt_mailha.core import render
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_site"
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,63}")


def __virtual__():
    return __virtualname__


_PAST = {"create": "created", "update": "updated", "fix the mode or group of": "fixed the mode or group of"}


def rendered(name, artifact, node=None):
    """Ensure the file of ``artifact`` (from the registry in ``salt_mailha.core.render``) at ``name``
    holds exactly what the model renders for this node, with the registry's mode."""
    ret = glue.state_ret(name)
    try:
        site = glue.site_from_pillar(__pillar__, __opts__)
        n = glue.this_node(site, __opts__, node)
        art = render.artifact(artifact)
        if name != art.path:
            raise MailhaError(f"name {name!r} is not the path of artifact {artifact!r} ({art.path})")
        content = art.render(site, n)
    except (MailhaError, glue.CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret

    path = glue.under_root(name, __opts__, __pillar__)
    old = glue.read_text(path)
    old_mode = glue.file_mode(path)
    gid = glue.group_id(art.group)
    old_gid = glue.file_gid(path)
    if old == content and old_mode == art.mode and (gid is None or old_gid == gid):
        ret["comment"] = f"{path} is already as rendered"
        return ret

    changes = {
        "old": None if old is None else {"mode": old_mode, "lines": len(old.splitlines())},
        "new": {"mode": art.mode, "lines": len(content.splitlines())},
    }
    if gid is not None and old_gid != gid:
        changes["new"]["group"] = art.group
    if old != content:
        changes["diff"] = glue.redacted_diff(old, content, name, site.secrets())
    ret["changes"] = changes
    verb = "create" if old is None else ("update" if old != content else "fix the mode or group of")
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would {verb} {path}"
        return ret
    try:
        glue.write_atomic(path, content, art.mode, gid)
    except OSError as exc:
        ret["result"] = False
        ret["changes"] = {}
        ret["comment"] = f"could not write {path}: {exc.strerror}"
        return ret
    ret["comment"] = f"{_PAST[verb]} {path}"
    return ret


def boot_enabled(name):
    """Ensure systemd starts service ``name`` at boot, checked the way systemd decides it
    (``systemctl is-enabled``), so a node that reboots brings it back on its own.

    .. code-block:: yaml

        mailha-boot-slapd:
          mailha_site.boot_enabled:
            - name: slapd

    Salt's ``service.enabled`` is not enough for Debian's init-script-only services (slapd): it
    runs ``update-rc.d -f NAME defaults``, which keeps the K links of an earlier disable, so it
    reports success while the service stays off at boot. ``systemctl enable`` flips them. Nor is
    ``service.running``'s ``enable`` with a ``watch``: when the watched file changed and the
    service was already up, Salt ran ``mod_watch``, which starts but never enables (seen: postfix
    off after a mail node's power cut in the lab's drill).
    """
    ret = glue.state_ret(name)
    if not _UNIT.fullmatch(name):
        ret["result"] = False
        ret["comment"] = f"service name {name!r} is not a plain unit name"
        return ret
    state = __salt__["cmd.run_all"](["systemctl", "is-enabled", name], python_shell=False,
                                    ignore_retcode=True)
    now = state["stdout"].strip().splitlines()[-1:] or ["unknown"]
    # not "enabled-runtime": that lives in /run and is gone at the next boot
    if now[0] in ("enabled", "static", "alias"):
        ret["comment"] = f"{name} starts at boot ({now[0]})"
        return ret
    ret["changes"] = {name: {"old": now[0], "new": "enabled"}}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would enable {name} at boot (now {now[0]})"
        return ret
    res = __salt__["cmd.run_all"](["systemctl", "enable", name], python_shell=False, ignore_retcode=True)
    after = __salt__["cmd.run_all"](["systemctl", "is-enabled", name], python_shell=False,
                                    ignore_retcode=True)["stdout"].strip().splitlines()[-1:]
    if res["retcode"] != 0 or after[:1] != ["enabled"]:
        ret["result"] = False
        ret["changes"] = {}
        ret["comment"] = (f"systemctl enable {name} did not enable it (now {(after or ['?'])[0]}): "
                          f"{(res['stderr'] or res['stdout']).strip()[-200:]}")
        return ret
    ret["comment"] = f"enabled {name} at boot (was {now[0]})"
    return ret
