"""Remediation decisions: a snapshot of one node in, actions and a reason sentence out.

Pure functions in the manner of Patroni's HA loop. The runner (``salt_mailha/runners/mailha.py``)
gathers the snapshot (what the load balancers see *now*, what was done before), asks
``plan_remediation`` and applies the plan; ``test=True`` only prints it.

Rules, each one tested in ``tests/unit/test_remediation.py``:

* **Authority.** A report is only a trigger. Only the node itself, a load balancer or the master
  (presence events, schedules, operators) may trigger a re-check of a node (``assess_claim``); a
  mail minion's word about another node changes nothing. The verdict comes from the balancers'
  fresh probes only: "down" when every answering balancer sees a failing service, "up" when
  every one sees all services pass, nothing is done when they disagree or none answered.
* **Operator drains** (``mailha.drain NODE``) are never undone automatically.
* **Hysteresis.** An automatically drained node is restored only after it was drained for at
  least ``up_after * probe_interval`` seconds and passes the re-check again (the plan's
  ``retry_after`` says when to look again: the beacon's "up" report may come earlier).
* **Rate limit.** At most ``max_actions`` automatic actions (a drain or a restore of one node,
  each covering every balancer and the MX) per node in any ``window`` seconds. Drains are never
  held back (taking a failing node out of service is the safe direction); a restore is allowed
  only while ``max_actions - 1`` actions remain unused in the window, so that the drain that may
  follow still fits. A node held back stays drained until a later re-check (the master's
  ``mailha.reconcile`` schedule) finds the window clear.
* **Last MX.** The MX of a mail node is not withdrawn when no other mail node's MX is in service:
  a domain without MX makes senders fall back to its A record.
* **One re-check at a time per node** (``NodeGate``): a report about a node that is already being
  re-checked queues at most one follow-up re-check; every further report folds into that queued
  one, which begins after them and so sees what they saw. A flood of N reports costs a number of
  re-checks bounded by how long the flood lasts, not by N, and the last report is never lost.
"""

import contextlib
import dataclasses
import fcntl
import os
import re
import threading
import time

from salt_mailha.core.errors import Refused

AUTO = "auto"
OPERATOR = "operator"
DRAIN = "drain"
UNDRAIN = "undrain"
WITHDRAW_MX = "withdraw_mx"
RESTORE_MX = "restore_mx"

_NODE_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MINION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def check_node(value, known, what="node"):
    """Return ``value`` if it names a known node, else raise ``Refused`` naming the fix.

    Every node id that came with an event passes here before it reaches a command.
    """
    if not isinstance(value, str) or not _NODE_ID.match(value):
        raise Refused(
            f"{what} {str(value)[:64]!r} is not a node id (lower-case letters, digits and '-'); "
            "nothing done"
        )
    if value not in known:
        raise Refused(
            f"{what} {value!r} is not a node of this site (known: {', '.join(sorted(known))}); "
            "nothing done"
        )
    return value


def check_minion_id(value, what="reporter"):
    """A reporting minion id is only logged and compared, but still must look like one."""
    if value is None:
        return None
    if not isinstance(value, str) or not _MINION_ID.match(value):
        raise Refused(f"{what} {str(value)[:64]!r} is not a valid minion id; nothing done")
    return value


@dataclasses.dataclass(frozen=True)
class Policy:
    probe_interval: float = 1.0
    down_after: int = 3
    up_after: int = 3
    max_actions: int = 4
    window: float = 60.0

    @classmethod
    def from_spec(cls, spec):
        """Build from the model's ``RemediationSpec`` (or anything with the same attributes)."""
        return cls(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(cls)
                      if getattr(spec, f.name, None) is not None})

    @property
    def restore_after(self):
        return self.up_after * self.probe_interval


@dataclasses.dataclass(frozen=True)
class NodeRecord:
    """What remediation did to a node; persisted on the master between runner calls."""

    drained_by: str | None = None  # None, AUTO or OPERATOR
    drained_at: float = 0.0
    mx_withdrawn: bool = False
    actions: tuple = ()  # times of automatic actions (for the rate limit)

    def as_dict(self):
        return {"drained_by": self.drained_by, "drained_at": self.drained_at,
                "mx_withdrawn": self.mx_withdrawn, "actions": list(self.actions)}

    @classmethod
    def from_dict(cls, data):
        data = data or {}
        drained_by = data.get("drained_by")
        if drained_by not in (None, AUTO, OPERATOR):
            drained_by = OPERATOR  # an unreadable owner is treated as the cautious one
        return cls(drained_by, float(data.get("drained_at") or 0.0),
                   bool(data.get("mx_withdrawn")),
                   tuple(float(t) for t in data.get("actions") or ()))


@dataclasses.dataclass(frozen=True)
class Observation:
    """One balancer's fresh view of a node: ``ok`` None when the balancer did not answer."""

    balancer: str
    ok: bool | None
    failing: tuple = ()  # names of failing services


@dataclasses.dataclass(frozen=True)
class Snapshot:
    node: str
    balancers: tuple  # every balancer the node's real servers live on
    observations: tuple  # Observation per balancer asked
    record: NodeRecord
    now: float
    has_mx: bool = False  # the node is a mail node with an MX record in the site
    other_mx_in_service: int = 1  # MX records of other mail nodes not withdrawn


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str  # DRAIN, UNDRAIN, WITHDRAW_MX, RESTORE_MX
    node: str
    target: str  # a balancer's minion id, or "dns"

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Plan:
    actions: tuple
    reason: str
    record: NodeRecord  # the record to persist once the actions are applied
    verdict: str = "none"  # down, up, split, unknown, ignored, operator
    retry_after: float | None = None  # seconds after which a re-check may decide otherwise

    def as_dict(self):
        return {"actions": [a.as_dict() for a in self.actions], "reason": self.reason,
                "verdict": self.verdict}


def assess_claim(reporter, node, balancers):
    """Decide whether a report about ``node`` from ``reporter`` deserves a re-check.

    ``reporter`` None means the master itself (presence event, schedule, operator).
    Returns ``(recheck, reason)``.
    """
    if reporter is None:
        return True, f"the master asked for a re-check of {node}"
    if reporter in balancers:
        return True, f"load balancer {reporter} reported a change of {node}"
    if reporter == node:
        return True, f"{node} reported a change of its own services"
    return False, (
        f"{reporter} is not authoritative for {node} (only the load balancers "
        f"{', '.join(balancers)} and {node} itself are); report ignored"
    )


def verdict(observations):
    """Return ``(verdict, words)`` from the balancers' fresh observations."""
    answered = [o for o in observations if o.ok is not None]
    if not answered:
        return "unknown", "no load balancer answered the re-check"
    views = ", ".join(
        f"{o.balancer}: " + ("up" if o.ok else "down" + (f" ({', '.join(o.failing)})"
                                                          if o.failing else ""))
        for o in answered
    )
    if all(o.ok for o in answered):
        return "up", f"every load balancer sees it up ({views})"
    if not any(o.ok for o in answered):
        return "down", f"every load balancer sees it down ({views})"
    return "split", f"the load balancers disagree ({views})"


def _recent(record, policy, now):
    return tuple(t for t in record.actions if now - t < policy.window)


def _drain_actions(snap, keep_mx_reason):
    actions = [Action(DRAIN, snap.node, b) for b in snap.balancers]
    withdraw = snap.has_mx and not keep_mx_reason
    if withdraw:
        actions.append(Action(WITHDRAW_MX, snap.node, "dns"))
    return tuple(actions), withdraw


def plan_remediation(snap, policy):
    """The automatic decision for one node. Returns a ``Plan`` (possibly without actions)."""
    node, record, now = snap.node, snap.record, snap.now
    seen, words = verdict(snap.observations)
    if record.drained_by == OPERATOR:
        return Plan((), f"{node} was drained by an operator; automatic remediation leaves it "
                        f"alone (mailha.undrain {node} returns it to service)", record, "operator")
    if seen in ("unknown", "split"):
        return Plan((), f"{words} of {node}; nothing done", record, seen)
    recent = _recent(record, policy, now)
    targets = ", ".join(snap.balancers) or "no balancer"
    if seen == "down":
        if record.drained_by == AUTO:
            return Plan((), f"{node} is down ({words}) and already drained", record, seen)
        keep_mx = snap.has_mx and snap.other_mx_in_service < 1
        actions, withdrawn = _drain_actions(snap, keep_mx)
        mx = (" and withdrawing its MX" if withdrawn else
              " but keeping its MX: it is the last one in service" if keep_mx else "")
        new = NodeRecord(AUTO, now, withdrawn, recent + (now,))
        return Plan(actions, f"{node} failed the re-check ({words}); draining it on {targets}{mx}",
                    new, seen)
    # seen == "up"
    if record.drained_by is None and record.mx_withdrawn:
        # the drain did not take but the MX withdrawal did: the MX still has to come back
        return Plan((Action(RESTORE_MX, node, "dns"),),
                    f"{node} passes the re-check ({words}) and is in service on the balancers, "
                    f"but its MX is withdrawn; restoring its MX",
                    NodeRecord(None, 0.0, False, recent + (now,)), seen)
    if record.drained_by is None:
        return Plan((), f"{node} is healthy and in service ({words})",
                    dataclasses.replace(record, actions=recent), seen)
    held = now - record.drained_at
    if held < policy.restore_after:
        return Plan((), f"{node} passes the re-check but was drained only {held:.1f} s ago; it "
                        f"stays drained for at least {policy.restore_after:g} s (hysteresis)",
                    record, seen, retry_after=policy.restore_after - held)
    if len(recent) > policy.max_actions - 2:
        return Plan((), f"{node} passes the re-check but {len(recent)} automatic action(s) in the "
                        f"last {policy.window:g} s leave no room under the limit of "
                        f"{policy.max_actions} for a restore and a later drain; it stays drained "
                        f"(rate limit)", record, seen)
    actions = tuple(Action(UNDRAIN, node, b) for b in snap.balancers)
    if record.mx_withdrawn:
        actions += (Action(RESTORE_MX, node, "dns"),)
    new = NodeRecord(None, 0.0, False, recent + (now,))
    mx = " and restoring its MX" if record.mx_withdrawn else ""
    return Plan(actions, f"{node} passes the re-check again ({words}); restoring it on "
                         f"{targets}{mx}", new, seen)


def plan_operator_drain(snap):
    """``mailha.drain NODE``: out of service on every balancer and in DNS, owned by the operator."""
    node, record = snap.node, snap.record
    if record.drained_by == OPERATOR:
        return Plan((), f"{node} is already drained by an operator", record, "operator")
    keep_mx = snap.has_mx and snap.other_mx_in_service < 1 and not record.mx_withdrawn
    actions, withdrawn = _drain_actions(snap, keep_mx or record.mx_withdrawn)
    withdrawn = withdrawn or record.mx_withdrawn
    mx = (" and withdrawing its MX" if withdrawn and not record.mx_withdrawn else
          " but keeping its MX: it is the last one in service" if keep_mx else "")
    new = NodeRecord(OPERATOR, snap.now, withdrawn, record.actions)
    return Plan(actions, f"operator drain of {node}: draining it on "
                         f"{', '.join(snap.balancers) or 'no balancer'}{mx}; automatic "
                         f"remediation will not restore it", new, "operator")


def plan_operator_undrain(snap):
    """``mailha.undrain NODE``: back in service whoever drained it; warns if it looks unhealthy."""
    node, record = snap.node, snap.record
    seen, words = verdict(snap.observations)
    actions = tuple(Action(UNDRAIN, node, b) for b in snap.balancers)
    if record.mx_withdrawn:
        actions += (Action(RESTORE_MX, node, "dns"),)
    warn = "" if seen == "up" else f" (warning: {words})"
    return Plan(actions, f"operator undrain of {node}: restoring it on "
                         f"{', '.join(snap.balancers) or 'no balancer'}"
                         f"{' and restoring its MX' if record.mx_withdrawn else ''}{warn}",
                NodeRecord(None, 0.0, False, record.actions), "operator")


# ----------------------------------------------------------------------------- coalescing


RUN = "run"  # NodeGate.enter: this report re-checks the node now
QUEUED = "queued"  # ... after waiting for the re-check that was running when it came
FOLDED = "folded"  # ... does not re-check: a queued re-check that begins later covers it


class NodeGate:
    """At most one re-check of a node at a time, and at most one queued behind it.

    Two ``flock`` files per node under ``directory``: ``<site>-<node>.run`` is held by the report
    re-checking the node, ``<site>-<node>.queue`` by the one report waiting to re-check after it.
    A report that finds both taken is *folded*: the queued report releases the queue lock only
    once it holds the run lock, just before its re-check begins, so every folded report came
    before that re-check (which sees the node as it is after the report). A report that comes
    after that finds the queue free and queues itself: a change during a running re-check is
    always followed by one more.

    File locks, because the reactor runs reactions in threads of one process while the schedule
    and ``salt-run`` are other processes (and other masters when the state directory is shared);
    the kernel drops a dead process's locks, so a crash never wedges a node. Folded reports are
    counted per process (``take_folded``), for the report of the re-check that covers them.
    """

    _folded = {}
    _folded_lock = threading.Lock()

    def __init__(self, directory, site_name, poll=0.01):
        self.directory, self.site, self.poll = directory, site_name, poll

    def _path(self, node, kind):
        # node ids are checked (check_node) before they name a file
        return os.path.join(self.directory, f"gate-{self.site}-{node}.{kind}")

    @contextlib.contextmanager
    def enter(self, node, timeout=120.0):
        """Yield ``RUN``, ``QUEUED`` (the caller re-checks; the gate is held until the block
        ends) or ``FOLDED`` (the caller does nothing). Raises ``Refused`` when a queued report
        waited ``timeout`` seconds for the running re-check."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        with open(self._path(node, "run"), "a+") as run:
            if _try_lock(run):
                try:
                    yield RUN
                finally:
                    fcntl.flock(run, fcntl.LOCK_UN)
                return
            with open(self._path(node, "queue"), "a+") as queue:
                if not _try_lock(queue):
                    with self._folded_lock:
                        key = (self.site, node)
                        self._folded[key] = self._folded.get(key, 0) + 1
                    yield FOLDED
                    return
                try:
                    deadline = time.monotonic() + timeout
                    while not _try_lock(run):
                        if time.monotonic() > deadline:
                            raise Refused(f"a re-check of {node} held {self._path(node, 'run')} "
                                          f"for {timeout:g} s; this report gave up (the "
                                          "reconcile schedule will look again)")
                        time.sleep(self.poll)
                finally:
                    fcntl.flock(queue, fcntl.LOCK_UN)
            try:
                yield QUEUED
            finally:
                fcntl.flock(run, fcntl.LOCK_UN)

    def take_folded(self, node):
        """How many reports this process folded into the re-check beginning now (and reset)."""
        with self._folded_lock:
            return self._folded.pop((self.site, node), 0)


def _try_lock(fh):
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False

