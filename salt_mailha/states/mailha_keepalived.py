"""keepalived on a load balancer: the notify hook its rendered keepalived.conf calls.

.. code-block:: yaml

    mailha-keepalived-notify:
      mailha_keepalived.notify_hook:
        - name: /etc/keepalived/mailha-notify.sh

The hook (rendered by ``salt_mailha.core.lb.render_keepalived_notify``) checks keepalived's
arguments against the site's VRRP instances and fires ``mailha/keepalived/<vip>/<state>``
with ``salt-call event.send``. keepalived's ``enable_script_security`` runs it only if it is
root-owned and not writable by others, hence mode 0755 written atomically. The path is prefixed
by minion config ``mailha_root`` when set.
"""
import os
import sys

from salt_mailha import glue
from salt_mailha.core import lb
from salt_mailha.core.errors import MailhaError

__virtualname__ = "mailha_keepalived"
MODE = "0755"


def __virtual__():
    return __virtualname__


def _own_salt_call():
    """The salt-call beside the minion's own Python (a venv install, /opt/salt in the lab), else
    Debian's."""
    candidate = os.path.join(os.path.dirname(sys.executable), "salt-call")
    return candidate if os.access(candidate, os.X_OK) else lb.SALT_CALL


def notify_hook(name=lb.NOTIFY_SCRIPT, salt_call=None, node=None):
    """Ensure the notify hook at ``name`` is exactly what the model renders (mode 0755).

    name
        Path of the hook; keepalived.conf names ``/etc/keepalived/mailha-notify.sh``.
    salt_call
        Absolute path of ``salt-call`` on the balancer (default: the one beside the minion's Python).
    """
    salt_call = salt_call or _own_salt_call()
    ret = glue.state_ret(name)
    try:
        site = glue.site_from_pillar(__pillar__, __opts__)
        n = glue.this_node(site, __opts__, node)
        content = lb.render_keepalived_notify(site, n, salt_call=salt_call)
    except (MailhaError, glue.CommandExecutionError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    path = glue.under_root(name, __opts__, __pillar__)
    old, old_mode = glue.read_text(path), glue.file_mode(path)
    if old == content and old_mode == MODE:
        ret["comment"] = f"{path} is already as rendered"
        return ret
    ret["changes"] = {"old": None if old is None else {"mode": old_mode},
                      "new": {"mode": MODE}, "diff": glue.redacted_diff(old, content, name, site.secrets())}
    verb = "create" if old is None else "update"
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would {verb} {path}"
        return ret
    try:
        glue.write_atomic(path, content, MODE)
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"could not write {path}: {exc.strerror}")
        return ret
    ret["comment"] = f"{verb}d {path}"
    return ret
