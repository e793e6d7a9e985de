"""ldirectord on a load balancer: the maintenance directory its rendered ldirectord.cf names, and
the site CA its https checks trust.

.. code-block:: yaml

    mailha-ldirectord-maintenance:
      mailha_ldirectord.maintenance_dir:
        - name: /etc/ldirectord.maintenance

    mailha-ldirectord-ca:
      mailha_ldirectord.ca_present:
        - name: mail:tls:ca

ldirectord refuses to start when ``maintenancedir`` does not exist. A file
``<real server address>[:<port>]`` in it marks that server down (``mailha_ipvs.drain`` writes
it); the state creates the directory (mode 0755) and never touches the files in it, so an
operator's drain survives every highstate.

``ca_present`` checks, and never writes, the CA bundle of pillar ``mailha:mail:tls:ca``: the
operator distributes it (it is public; a private CA's certificate, or a self-signed certificate,
which is its own CA). It fails, in both modes, when the file is missing, unreadable, holds no PEM
certificate or holds a private key, so lb.sls neither points ldirectord at it nor restarts it.

Paths are prefixed by minion config ``mailha_root`` when set.
"""
import os

from salt_mailha import glue
from salt_mailha.core import lb
from salt_mailha.core.errors import MailhaError

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


def ca_present(name="mail:tls:ca"):
    """Check the site CA bundle (``mail:tls:ca``) is on this balancer and OpenSSL loads it; without
    a CA in the pillar there is nothing to check (the system store is trusted).

    name
        A label; the path comes from the pillar.
    """
    ret = glue.state_ret(name)
    try:
        site, _ = glue.site_and_node(__pillar__, __opts__)
    except glue.CommandExecutionError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ca = lb.site_ca(site)
    if ca is None:
        ret["comment"] = "no mail:tls:ca in the pillar: ldirectord's https checks trust the system store"
        return ret
    path = glue.under_root(ca, __opts__, __pillar__)
    try:
        count = lb.check_ca_bundle(path)
    except MailhaError as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret["comment"] = f"{path} holds {count} certificate(s) for ldirectord's https checks to trust"
    return ret
