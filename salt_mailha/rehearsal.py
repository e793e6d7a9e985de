"""Rehearsals are offline: the one rule every state and execution module asks before it acts on
the live host or the network.

A rehearsal is a run with a scratch ``mailha_root`` (minion config, or pillar on the command
line): files go under that root, and nothing else happens. No DNS query or UPDATE, no MySQL or
LDAP connection, no mount, no ``exportfs``, no service start or restart, no ``ipvsadm``, no
address on ``lo`` or ``/proc/sys`` write, no installer run. The states show what they would do
instead (the DNS plan, the step they skip) and report no changes, since none were made.

Minion config ``mailha_live`` overrides that default:

* ``mailha_live: True`` with a scratch ``mailha_root``: files under the root, *and* the live
  actions. Only for a minion whose network and kernel are disposable (a test's own named on
  loopback, a network namespace, a User-mode Linux guest). It is read from the minion config only,
  never from pillar: a pillar cannot turn a rehearsal live.
* ``mailha_live: False`` without ``mailha_root``: files only, on the real root.
"""
import functools

from salt.exceptions import CommandExecutionError

from salt_mailha import glue


def live(opts, pillar=None):
    """True when states and modules may act on the live host and network: minion config
    ``mailha_live`` when set, else True exactly when files go to the real root ``/``."""
    setting = opts.get("mailha_live")
    if setting is not None:
        return bool(setting)
    return glue.root(opts, pillar) == "/"


def why(opts, pillar=None):
    """The reason a step is left out, for comments: names the root and the switch."""
    root = glue.root(opts, pillar)
    if root == "/":
        return "minion config mailha_live is False: live actions are off"
    return (f"a rehearsal (mailha_root {root}) acts on nothing live and sends nothing over the "
            f"network; set minion config mailha_live: True to act live anyway")


def refused_offline(what):
    """Decorator of an execution module function that ``what`` (acts on the live host or
    connects): in a rehearsal it raises CommandExecutionError naming the function and the switch,
    before anything happens. The loader's ``__opts__``/``__pillar__`` are read from the module."""
    def wrap(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            env = func.__globals__
            opts, pillar = env.get("__opts__") or {}, env.get("__pillar__")
            if not live(opts, pillar):
                name = f"{env.get('__virtualname__', func.__module__)}.{func.__name__}"
                raise CommandExecutionError(f"{name} {what}; refused: {why(opts, pillar)}")
            return func(*args, **kwargs)
        return wrapper
    return wrap
