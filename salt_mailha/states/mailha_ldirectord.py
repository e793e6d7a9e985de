"""ldirectord on a load balancer: the maintenance directory its rendered ldirectord.cf names.

.. code-block:: yaml

    mailha-ldirectord-maintenance:
      mailha_ldirectord.maintenance_dir:
        - name: /etc/ldirectord.maintenance

ldirectord refuses to start when ``maintenancedir`` does not exist. A file
``<real server address>[:<port>]`` in it marks that server down (``mailha_ipvs.drain`` writes
it); the state creates the directory (mode 0755) and never touches the files in it, so an
operator's drain survives every highstate. Prefixed by minion config ``mailha_root`` when set.
"""
import os

from salt_mailha import glue
from salt_mailha.core import lb

__virtualname__ = "mailha_ldirectord"
MODE = 0o755


def __virtual__():
    return __virtualname__


def maintenance_dir(name=lb.MAINTENANCE_DIR):
    """Ensure ldirectord's maintenance directory exists with mode 0755 (its content is left alone).

    name
        The directory; must match ``maintenancedir`` in ldirectord.cf.
    """
    ret = glue.state_ret(name)
    path = glue.under_root(name, __opts__, __pillar__)
    if os.path.isdir(path) and (os.stat(path).st_mode & 0o7777) == MODE:
        drained = sorted(os.listdir(path))
        ret["comment"] = f"{path} exists" + (f"; drained: {', '.join(drained)}" if drained else "")
        return ret
    if os.path.exists(path) and not os.path.isdir(path):
        ret.update(result=False, comment=f"{path} exists and is not a directory; move it away")
        return ret
    old = f"{os.stat(path).st_mode & 0o7777:04o}" if os.path.isdir(path) else None
    ret["changes"] = {"old": old, "new": "0755"}
    if __opts__["test"]:
        ret.update(result=None, comment=f"would {'create' if old is None else 'fix the mode of'} {path}")
        return ret
    try:
        os.makedirs(path, exist_ok=True)
        os.chmod(path, MODE)
    except OSError as exc:
        ret.update(result=False, changes={}, comment=f"could not create {path}: {exc.strerror}")
        return ret
    ret["comment"] = f"{'created' if old is None else 'fixed the mode of'} {path}"
    return ret
