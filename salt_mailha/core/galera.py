"""Galera: parsers of what a node says about itself, the bootstrap decision, and galera.cnf.

Pure Python (never imports salt). Parsers read ``grastate.dat``, the ``Recovered position`` lines
that ``mariadbd --wsrep-recover`` logs, and ``SHOW GLOBAL STATUS LIKE 'wsrep%'`` rows. The
decision ``choose_bootstrap_node`` takes one report per member and a policy and returns an action
with a reason, the way an operator would explain it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import formats
from .errors import MailhaError, ParseError

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_RE = re.compile(rf"^{_UUID}$")
# "WSREP: Recovered position: <uuid>:<seqno>" and, with wsrep GTIDs, ",<domain>-<server>-<seqno>".
# Not "Recovered position from storage:", which a joiner logs during SST.
_RECOVERED = re.compile(rf"WSREP: Recovered position:\s+({_UUID}):(-?\d+)(?:,[\d-]+)?\s*$", re.M)


# ----------------------------------------------------------------------------------- facts


@dataclass(frozen=True, order=True)
class GaleraPosition:
    """A node's place in a cluster's history: the cluster state UUID and the last seqno."""

    uuid: str
    seqno: int

    def __post_init__(self):
        if not _UUID_RE.match(self.uuid):
            raise ParseError(f"{self.uuid!r} is not a Galera state UUID")
        if self.seqno < -1:
            raise ParseError(f"seqno {self.seqno} is below -1")

    @classmethod
    def parse(cls, text):
        """``"<uuid>:<seqno>"`` -> GaleraPosition (what ``--wsrep-start-position`` takes)."""
        m = re.fullmatch(rf"({_UUID}):(-?\d+)", str(text).strip())
        if not m:
            raise ParseError(f"{text!r} is not a Galera position <uuid>:<seqno>")
        return cls(m.group(1), int(m.group(2)))

    @property
    def empty(self):
        """No history at all: a node that never joined a cluster (zero UUID, seqno -1)."""
        return self.uuid == ZERO_UUID and self.seqno == -1

    @property
    def known(self):
        """The seqno is real (a clean shutdown or a recovery), not -1."""
        return self.seqno >= 0

    def __str__(self):
        return f"{self.uuid}:{self.seqno}"


@dataclass(frozen=True)
class GraState:
    """The contents of ``grastate.dat``."""

    uuid: str
    seqno: int
    safe_to_bootstrap: bool
    version: str = ""

    @property
    def position(self):
        return GaleraPosition(self.uuid, self.seqno)


def parse_grastate(text):
    """Parse ``grastate.dat``.

    An empty file (a node that failed before its first join writes one) means "no history":
    zero UUID, seqno -1, not safe to bootstrap. A file with a body but no uuid/seqno is an error.
    """
    if not text.strip():
        return GraState(ZERO_UUID, -1, False)
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ParseError(f"grastate.dat: line {line!r} is not 'key: value'")
        fields[key.strip()] = value.strip()
    try:
        uuid, seqno = fields["uuid"], int(fields["seqno"])
    except KeyError as exc:
        raise ParseError(f"grastate.dat has no {exc.args[0]!r} line") from None
    except ValueError:
        raise ParseError(f"grastate.dat: seqno {fields['seqno']!r} is not an integer") from None
    safe = fields.get("safe_to_bootstrap", "0")
    if safe not in ("0", "1"):
        raise ParseError(f"grastate.dat: safe_to_bootstrap {safe!r} is not 0 or 1")
    GaleraPosition(uuid, seqno)  # validates both
    return GraState(uuid, seqno, safe == "1", fields.get("version", ""))


def set_safe_to_bootstrap(text, value=True):
    """``grastate.dat`` text with ``safe_to_bootstrap`` set; every other line kept as it was."""
    parse_grastate(text)
    new, n = re.subn(r"(?m)^(safe_to_bootstrap:\s*)[01]\s*$", lambda m: m.group(1) + ("1" if value else "0"),
                     text)
    if n != 1:
        raise ParseError("grastate.dat has no safe_to_bootstrap line to set")
    return new


def parse_recovered_position(log_text):
    """The position ``mariadbd --wsrep-recover`` logged. The last line wins: a log file reused
    across runs holds one line per run. Raises ParseError when the run logged none (it failed)."""
    found = _RECOVERED.findall(log_text)
    if not found:
        raise ParseError("no 'WSREP: Recovered position' line in the --wsrep-recover log; "
                         "the recovery run failed: read the log for the InnoDB or WSREP error")
    uuid, seqno = found[-1]
    return GaleraPosition(uuid, int(seqno))


# --------------------------------------------------------------------- completeness of a copy
# Files MariaDB's SST scripts leave in the joiner's datadir while a transfer runs and remove when
# the script ends, successfully or not (wsrep_sst_common, wsrep_sst_rsync, wsrep_sst_mariabackup
# of MariaDB 10.11): one still there after a stop means the transfer was cut off (power loss, a
# SIGKILL) and the datadir holds part of a donor's files.
SST_MARKERS = (
    "sst_in_progress",     # every joiner script: touched at start, removed by its cleanup
    "rsync_sst_complete",  # rsync joiner: the donor's "magic file", removed once the copy is used
    ".sst",                # mariabackup joiner: the staging directory of the streamed backup
)
# mariadbd logs the joiner script it runs, then one of these once the state is installed, or
# once the node is Synced later on (e.g. a datadir re-initialized and bootstrapped since: Galera
# reaches SYNCED only with a complete state).
_SST_JOINER_START = re.compile(r"^(?P<ts>\S+\s+\S+)\s.*WSREP: Running: 'wsrep_sst_\w+ --role 'joiner'", re.M)
_SST_JOINER_DONE = re.compile(r"WSREP: (?:SST succeeded for position|Installed new state from SST|"
                              r"Shifting JOINED -> SYNCED)", re.M)


def last_joiner_transfer(log_text):
    """From a member's error log: ``None`` when it never received a state transfer (SST), else
    ``(started, completed)``: the timestamp of the last SST this node requested as a joiner and
    whether mariadbd logged it as installed, or the node Synced, afterwards."""
    starts = list(_SST_JOINER_START.finditer(log_text or ""))
    if not starts:
        return None
    last = starts[-1]
    return " ".join(last.group("ts").split()), bool(_SST_JOINER_DONE.search(log_text, last.end()))


@dataclass(frozen=True)
class CopyAssessment:
    """Whether a stopped member holds a complete copy of the cluster's history. ``incomplete``
    lists the evidence against it (empty: complete); ``position`` is what it would start at
    (informative only when incomplete: such a node never sets anyone's position)."""

    position: GaleraPosition | None
    incomplete: tuple = ()

    @property
    def complete(self):
        return not self.incomplete


def assess_copy(grastate_text, recovered=None, markers=(), log_text=None):
    """Decide whether a stopped member's datadir is a complete copy of its cluster's history.

    Inputs are plain facts gathered on the node: ``grastate_text`` (None: no grastate.dat),
    ``recovered`` (the ``--wsrep-recover`` position, None when not run), ``markers`` (names from
    ``SST_MARKERS`` present in the datadir), ``log_text`` (the tail of its error log). Evidence,
    each sufficient on its own:

    * an SST marker file: the SST script was killed mid-transfer (its cleanup removes them);
    * the error log's last joiner SST has no "SST succeeded"/"Installed new state": mariadbd
      died before it accepted the transfer (covers a failed script whose cleanup removed the
      marker, e.g. the donor died mid-copy), unless InnoDB recovers no history at all (the
      datadir was re-initialized since);
    * grastate.dat missing, empty or at the zero UUID while InnoDB recovers a real position:
      the data came from a donor (InnoDB's wsrep checkpoint is the donor's) but Galera never
      recorded the transfer (it writes grastate.dat when the state is installed and zeroes it
      when a transfer fails);
    * grastate.dat's UUID and the recovered UUID differ: two histories in one datadir.
    """
    gs = parse_grastate(grastate_text) if grastate_text is not None else None
    why = []
    for name in markers:
        why.append(f"{name} is in the datadir: a state transfer into this node was cut off "
                   f"(the SST script removes it when it ends)")
    joiner = last_joiner_transfer(log_text)
    # A datadir re-initialized since (InnoDB recovers no history at all) has nothing to protect.
    if joiner is not None and not joiner[1] and not (recovered is not None and recovered.empty):
        why.append(f"the error log shows a state transfer requested at {joiner[0]} that never "
                   f"completed")
    if recovered is not None and not recovered.empty:
        if gs is None or gs.uuid == ZERO_UUID:
            state = ("no grastate.dat" if gs is None else
                     "grastate.dat is empty" if not grastate_text.strip() else "grastate.dat has the zero UUID")
            why.append(f"{state} but InnoDB recovers {recovered}: data from a donor that Galera "
                       f"never recorded as a finished transfer")
        elif gs.uuid != recovered.uuid:
            why.append(f"grastate.dat says cluster {gs.uuid} but InnoDB recovers {recovered}")
    if gs is not None and gs.seqno >= 0:
        position = gs.position
    elif recovered is not None:
        position = recovered
    elif gs is not None:
        position = gs.position
    else:
        position = None
    return CopyAssessment(position, tuple(why))


@dataclass(frozen=True)
class WsrepStatus:
    """The wsrep status variables that say where a running node stands."""

    cluster_size: int
    cluster_status: str  # Primary | non-Primary | Disconnected
    local_state_comment: str  # Synced | Donor/Desynced | Joining | Joined | Initialized ...
    ready: bool
    connected: bool
    cluster_state_uuid: str
    last_committed: int

    @property
    def primary(self):
        return self.cluster_status == "Primary"

    @property
    def synced(self):
        """Fit for traffic: Synced, ready, in a Primary component (a Donor/Desynced node is not)."""
        return self.primary and self.ready and self.local_state_comment == "Synced"

    @property
    def position(self):
        return GaleraPosition(self.cluster_state_uuid or ZERO_UUID, max(self.last_committed, -1))

    def as_dict(self):
        return {
            "wsrep_cluster_size": self.cluster_size,
            "wsrep_cluster_status": self.cluster_status,
            "wsrep_local_state_comment": self.local_state_comment,
            "wsrep_ready": self.ready,
            "wsrep_connected": self.connected,
            "wsrep_cluster_state_uuid": self.cluster_state_uuid,
            "wsrep_last_committed": self.last_committed,
            "primary": self.primary,
            "synced": self.synced,
        }


def parse_wsrep_status(rows):
    """``SHOW GLOBAL STATUS LIKE 'wsrep%'`` rows (name, value) -> WsrepStatus.

    A server without a loaded provider reports only a few variables: missing ones read as
    "not in a cluster" rather than failing, so a half-started node is a value, not an error.
    """
    v = {str(k).lower(): ("" if val is None else str(val)) for k, val in rows}
    if not v:
        raise ParseError("no wsrep status variables: is this a MariaDB server with wsrep compiled in?")

    def num(name, default):
        try:
            return int(v.get(name, default))
        except ValueError:
            raise ParseError(f"{name} {v[name]!r} is not an integer") from None

    return WsrepStatus(
        cluster_size=num("wsrep_cluster_size", 0),
        cluster_status=v.get("wsrep_cluster_status", "Disconnected") or "Disconnected",
        local_state_comment=v.get("wsrep_local_state_comment", "") or "",
        ready=v.get("wsrep_ready", "OFF").upper() == "ON",
        connected=v.get("wsrep_connected", "OFF").upper() == "ON",
        cluster_state_uuid=v.get("wsrep_cluster_state_uuid", "") or "",
        last_committed=num("wsrep_last_committed", -1),
    )


# ----------------------------------------------------------------------------------- decision


@dataclass(frozen=True)
class NodeReport:
    """What one member said (or failed to say) about itself. A member with no report at all is
    treated as unreachable. ``position`` is grastate.dat's, or ``--wsrep-recover``'s when the
    grastate seqno is -1; for a running node the status gives it. ``incomplete`` is the evidence
    (``assess_copy``) that a stopped member's datadir is not a complete copy of the history."""

    node: str
    running: bool = False
    status: WsrepStatus | None = None
    position: GaleraPosition | None = None
    safe_to_bootstrap: bool = False
    error: str | None = None
    incomplete: tuple = ()

    @property
    def effective_position(self):
        if self.position is not None:
            return self.position
        if self.running and self.status is not None and self.status.cluster_state_uuid:
            return self.status.position
        return None

    @property
    def needs_sst(self):
        return bool(self.incomplete) and not self.running


@dataclass(frozen=True)
class BootstrapPolicy:
    """``members``: the data-bearing voting members (db + quorum roles) in stable pillar order.
    ``bootstrap_node``: who starts a brand-new cluster (pillar galera:bootstrap_node).
    ``force_node``: an operator's explicit choice; it overrides missing reports and a history
    with no recoverable seqno, never a live Primary component, a cluster UUID disagreement or a
    node whose copy is incomplete."""

    members: tuple
    bootstrap_node: str | None = None
    force_node: str | None = None


@dataclass(frozen=True)
class Step:
    """``bootstrap`` (start with --wsrep-new-cluster), ``pc_bootstrap`` (promote a running
    non-Primary node), ``join`` (start and join at the node's own position: IST when the donor
    still has it) or ``resync`` (discard an incomplete copy: start and take a full SST)."""

    action: str
    node: str
    position: GaleraPosition | None = None

    def as_dict(self):
        return {"action": self.action, "node": self.node,
                "position": str(self.position) if self.position else None}


@dataclass(frozen=True)
class GaleraAction:
    """``kind``: ``none`` (nothing to do), ``join`` (a Primary component exists: start the
    others), ``bootstrap`` (recover a stopped cluster from ``node``), ``new`` (no member has any
    history: start a brand-new cluster on ``node``), ``refuse`` (a guard failed)."""

    kind: str
    node: str | None = None
    steps: tuple = field(default_factory=tuple)

    def as_dict(self):
        return {"kind": self.kind, "node": self.node, "steps": [s.as_dict() for s in self.steps]}


def _names(nodes):
    return ", ".join(nodes)


def _needs_sst(nodes, reports):
    """"db1 needs a full SST (<first piece of evidence>)", for the reason texts."""
    return "; ".join(f"{m} needs a full SST ({reports[m].incomplete[0]})" for m in nodes)


def _later_steps(members, chosen, reports, pos):
    """After the first step: complete stopped members join at their own position, members whose
    copy is incomplete resync by full SST."""
    steps = []
    for m in members:
        r = reports[m]
        if m == chosen or r is None or r.running:
            continue
        if r.needs_sst:
            steps.append(Step("resync", m))
        elif m in pos:
            steps.append(Step("join", m, pos[m]))
    return tuple(steps)


def _safe_flags(chosen, members, reports):
    """Every safe_to_bootstrap the plan overrides, said in the reason."""
    notes = []
    if chosen and not reports[chosen].running and not reports[chosen].safe_to_bootstrap:
        notes.append(f"safe_to_bootstrap is 0 on {chosen} (it did not leave the cluster last, "
                     f"cleanly): the bootstrap sets it to 1")
    others = [m for m in members if m != chosen and reports[m] and reports[m].safe_to_bootstrap]
    if others:
        notes.append(f"overrides safe_to_bootstrap: 1 on {_names(others)}")
    return notes


def choose_bootstrap_node(positions, policy):  # noqa: C901 - one guard per paragraph reads best
    """Decide how a Galera cluster gets (back) to a Primary component.

    ``positions`` maps member name -> ``NodeReport``; ``policy`` is a ``BootstrapPolicy``.
    Returns ``(GaleraAction, reason)``. Guards, in order:

    1. a member in a Primary component: never bootstrap; the others join it (members whose copy
       is incomplete resync by full SST);
    2. a member whose copy is incomplete (``assess_copy``) is never a candidate, even when forced,
       and never sets a position: it resyncs after the bootstrap;
    3. every other member must have reported a position, unless an operator named the node;
    4. every reported history must share one cluster UUID (nodes with no history at all, zero
       UUID and seqno -1, are left out: they join by SST); else refuse naming the odd nodes;
    5. no complete history anywhere: a brand-new cluster on ``policy.bootstrap_node``, unless some
       member holds an incomplete copy (then the only data is partial: refuse, naming them);
    6. every member with history at seqno -1 (nothing recoverable): refuse unless forced;
    7. otherwise the highest seqno wins; ties go to ``safe_to_bootstrap`` then pillar order. The
       reason names every ``safe_to_bootstrap`` the plan overrides.
    """
    members = tuple(policy.members)
    if not members:
        return GaleraAction("refuse"), "no Galera members: give nodes the db or quorum role"
    reports = {m: positions.get(m) for m in members}
    incomplete = [m for m in members if reports[m] is not None and reports[m].needs_sst]

    # 1. A live Primary component is the cluster: bootstrapping another would split it.
    primary = [m for m in members if reports[m] and reports[m].running and reports[m].status
               and reports[m].status.primary]
    if primary:
        stopped = [m for m in members if not (reports[m] and reports[m].running)]
        pos = {m: reports[m].effective_position for m in stopped if reports[m] is not None}
        steps = _later_steps(members, None, reports, pos)
        size = reports[primary[0]].status.cluster_size
        if policy.force_node:
            return (GaleraAction("refuse", primary[0]),
                    f"{_names(primary)} in a Primary component (size {size}); refusing to bootstrap "
                    f"{policy.force_node} even when forced: it would split the cluster. Start the other "
                    f"members so they join it")
        if not stopped:
            return (GaleraAction("none", primary[0]),
                    f"{_names(primary)} in a Primary component (size {size}); every member is running")
        unreachable = [m for m in stopped if reports[m] is None]
        reason = (f"{_names(primary)} in a Primary component (size {size}); never bootstrap: "
                  f"{_names(m for m in stopped if reports[m] is not None) or 'nobody'} to join it")
        if incomplete:
            reason += f"; {_needs_sst(incomplete, reports)}"
        if unreachable:
            reason += f"; {_names(unreachable)} did not answer"
        return GaleraAction("join", primary[0], steps), reason

    force = policy.force_node
    if force is not None and force not in members:
        return (GaleraAction("refuse"),
                f"forced node {force!r} is not a Galera member; use one of {_names(members)}")
    if force is not None and force in incomplete:
        return (GaleraAction("refuse"),
                f"forced node {force} does not hold a complete copy of the history "
                f"({'; '.join(reports[force].incomplete)}); bootstrapping it would make a partial copy "
                f"the cluster's data, even when forced. Bootstrap a complete member; {force} resyncs "
                f"by full SST")

    # 2-3. Every complete member's position, or an operator's explicit choice.
    missing = {m: (reports[m].error if reports[m] and reports[m].error else "did not answer")
               for m in members if m not in incomplete and
               (reports[m] is None or reports[m].effective_position is None)}
    if force is not None and force in missing:
        return (GaleraAction("refuse"),
                f"forced node {force} has no position ({missing[force]}); it cannot bootstrap")
    if missing and force is None:
        detail = "; ".join(f"{m}: {why}" for m, why in missing.items())
        return (GaleraAction("refuse"),
                f"not every member reported its position ({detail}); bootstrapping now could lose "
                f"the transactions only they hold. Bring them back, or name the node to force")
    pos = {m: reports[m].effective_position for m in members if m not in missing and m not in incomplete}

    # 4. One history.
    by_uuid = {}
    for m, p in pos.items():
        if not p.empty:
            by_uuid.setdefault(p.uuid, []).append(m)
    if len(by_uuid) > 1:
        groups = sorted(by_uuid.items(), key=lambda kv: (-len(kv[1]), members.index(kv[1][0])))
        detail = "; ".join(f"{_names(ms)} on {u}" for u, ms in groups)
        odd = [m for _, ms in groups[1:] for m in ms]
        return (GaleraAction("refuse"),
                f"members disagree on the cluster UUID ({detail}): {_names(odd)} belong to another "
                f"history. Check which is right; a wrong node must be wiped to rejoin by SST")

    # 5. No complete history anywhere.
    if not by_uuid:
        if incomplete:
            empty = [m for m in pos]
            return (GaleraAction("refuse"),
                    f"no complete copy of the cluster's history is reachable: "
                    f"{_needs_sst(incomplete, reports)}"
                    + (f"; {_names(empty)} hold no Galera history" if empty else "")
                    + (f"; no position from {_names(missing)}" if missing else "")
                    + ". Bootstrapping any of them would start the cluster from partial or empty data, "
                      "so nothing is started, even when forced. Bring back a member with a complete "
                      "copy (or restore one from a backup) and run again")
        chosen = force or policy.bootstrap_node
        if chosen is None or chosen not in members:
            return (GaleraAction("refuse"),
                    "no member has any Galera history and galera:bootstrap_node names no member: "
                    "set galera:bootstrap_node in the pillar")
        steps = (Step("bootstrap", chosen, None),) + tuple(
            Step("join", m, None) for m in members if m != chosen and m in pos)
        return (GaleraAction("new", chosen, steps),
                f"no member has any Galera history: {chosen} starts a new cluster "
                f"({'forced by the operator' if force else 'galera:bootstrap_node'}), the others join it")

    uuid = next(iter(by_uuid))
    candidates = [m for m in members if m in pos and not pos[m].empty]
    seqnos = ", ".join(f"{m} {pos[m].seqno}" for m in members if m in pos)

    # 6. A history without a recoverable seqno anywhere: the most advanced node is unknowable.
    if all(pos[m].seqno < 0 for m in candidates) and force is None:
        return (GaleraAction("refuse"),
                f"every member with a history of cluster {uuid} is at seqno -1 ({seqnos}): no member "
                f"has a recoverable position, so which one holds the latest transactions cannot be "
                f"known. Read each member's --wsrep-recover log, then name the node with force=<node>")

    # 7. Highest seqno; ties by safe_to_bootstrap, then pillar order.
    best = max(candidates, key=lambda m: (pos[m].seqno, bool(reports[m].safe_to_bootstrap),
                                          -members.index(m)))
    chosen = force or best
    top = pos[best].seqno
    tied = [m for m in candidates if pos[m].seqno == top]
    if force:
        reason = f"{chosen} forced by the operator (seqno {pos[chosen].seqno}; highest is {best} {top})"
        if top < 0:
            reason += "; no member has a recoverable seqno"
        if missing:
            reason += f"; no position from {_names(missing)}"
    else:
        reason = f"{chosen} has the highest seqno {top} of cluster {uuid} ({seqnos})"
        if len(tied) > 1:
            by = ("safe_to_bootstrap" if reports[chosen].safe_to_bootstrap
                  and not all(reports[m].safe_to_bootstrap for m in tied) else "pillar order")
            reason += f"; tied with {_names(m for m in tied if m != chosen)}, chosen by {by}"
    notes = _safe_flags(chosen, members, reports)
    if incomplete:
        notes.append(f"{_needs_sst(incomplete, reports)} and resyncs after the bootstrap")
    if notes:
        reason += "; " + "; ".join(notes)
    first = Step("pc_bootstrap" if reports[chosen].running else "bootstrap", chosen, pos[chosen])
    return GaleraAction("bootstrap", chosen, (first,) + _later_steps(members, chosen, reports, pos)), reason


def check_history_match(local, cluster_uuid):
    """Before a member with a history joins a running Primary component: None when it may, else
    why not. Joining a component of another cluster UUID replaces the member's data by a full
    SST from it; that is never done implicitly (a new cluster started from a wrong or partial
    copy would overwrite every healthy member this way)."""
    if local is None or local.empty or not cluster_uuid or local.uuid == cluster_uuid:
        return None
    return (f"the Primary component runs cluster {cluster_uuid} but this node holds {local}: joining "
            f"would replace its data by a full SST from another history. If that cluster is the right "
            f"one, run mailha_galera.resync on this node; else stop that cluster and run "
            f"salt-run mailha.galera_recover")


def plan_first_start(node, bootstrap_node, incomplete, has_history, primary, answering):
    """What a stopped member does under ``state.apply`` (which may run on every member at once):
    ``(plan, reason)`` with plan ``join``, ``resync``, ``bootstrap``, ``wait`` or ``refuse``.

    ``incomplete``: evidence that its copy is cut off (``assess_copy``); ``has_history``: its
    datadir holds a position of some cluster (grastate.dat or InnoDB); ``primary``/``answering``:
    the other members that answer from a Primary component / answer at all.

    Only ``galera:bootstrap_node`` ever starts a brand-new cluster, and only from a datadir that
    holds nothing: no history and no cut-off transfer (a half-copied datadir reads as "no
    history" in grastate.dat while InnoDB holds a donor's files), with nobody else answering.
    A cluster that stopped as a whole is recovered by ``mailha.galera_recover``, never here.
    """
    if primary:
        if incomplete:
            return "resync", (f"{_names(primary)} in a Primary component; {node} needs a full SST "
                              f"({incomplete[0]})")
        return "join", f"{_names(primary)} in a Primary component"
    if node == bootstrap_node:
        if incomplete:
            return "refuse", (f"{node} is galera:bootstrap_node but its datadir is not a complete copy "
                              f"({'; '.join(incomplete)}); refusing to start a new cluster from it: run "
                              f"salt-run mailha.galera_recover")
        if has_history:
            return "wait", (f"{node} is galera:bootstrap_node but holds a Galera history: a stopped "
                            f"cluster is recovered by salt-run mailha.galera_recover, never by a new "
                            f"cluster")
        if answering:
            return "refuse", (f"{node} is galera:bootstrap_node but {_names(answering)} already run "
                              f"without a Primary component; refusing to start a second cluster: run "
                              f"salt-run mailha.galera_recover")
        return "bootstrap", f"{node} is galera:bootstrap_node, has no Galera history and no other member answers"
    return "wait", "no member answers from a Primary component yet"


# ----------------------------------------------------------------------------------- galera.cnf


def _seconds(value):
    """Seconds -> ISO 8601 duration as Galera reads it (PT1S, PT0.25S)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"


def gcomm_address(site):
    """``gcomm://`` of every full member (db + quorum) on the Galera network, in pillar order."""
    g = site.galera
    return "gcomm://" + ",".join(_hostport(m.address(g.network), g.instance(m.id).gmcast_port)
                                 for m in site.galera_members())


def _hostport(addr, port):
    return addr if port == 4567 else f"{addr}:{port}"


def provider_options(site, node):
    g = site.galera
    addr = node.address(g.network)
    inst = g.instance(node.id)
    opts = [
        f"gmcast.listen_addr=tcp://{addr}:{inst.gmcast_port}",
        f"ist.recv_addr={addr}:{inst.ist_port}",
        f"gcache.size={g.gcache_size}",
        "pc.recovery=TRUE",
    ]
    opts += [f"evs.{k}={_seconds(v)}" for k, v in g.evs.options()]
    return ";".join(opts)


def render_galera_cnf(site, node):
    """galera.cnf for ``node`` (a db or quorum member): a complete ``[mysqld]`` section, usable as
    a Debian drop-in or as ``--defaults-file`` for the direct launcher. Pins
    ``wsrep_node_address``/``wsrep_sst_receive_address`` to the node's Galera-network address so
    Galera never picks a VIP held on ``lo``."""
    from .render import environment  # the shared Jinja environment

    g = site.galera
    if g is None:
        raise MailhaError("the pillar has no mailha:galera section")
    if not (node.has("db") or node.has("quorum")):
        raise MailhaError(f"{node.id} is not a Galera member (roles {', '.join(node.roles)}); only db and "
                          f"quorum nodes get galera.cnf")
    addr = node.address(g.network)
    inst = g.instance(node.id)
    return environment().get_template("galera.cnf.j2").render(
        site=site, node=node, g=g, inst=inst, addr=addr,
        node_address=_hostport(addr, inst.gmcast_port),
        cluster_address=gcomm_address(site),
        provider_options=provider_options(site, node),
        sst_auth=(formats.mariadb_quote(f"{g.sst_user}:{g.sst_password.reveal()}")
                  if g.sst_method != "rsync" else None),
    )


def garbd_argv(site, node, log_path=None):
    """argv of garbd for ``node`` (role garbd): joins the full members' group, no data."""
    g = site.galera
    addr = node.address(g.network)
    inst = g.instance(node.id)
    opts = [f"gmcast.listen_addr=tcp://{addr}:{inst.gmcast_port}"]
    opts += [f"evs.{k}={_seconds(v)}" for k, v in g.evs.options()]
    argv = ["garbd", "--name", node.id, "--address", gcomm_address(site), "--group", g.cluster_name,
            "--options", ";".join(opts)]
    if log_path:
        argv += ["--log", str(log_path)]
    return argv


# ----------------------------------------------------------------------------------- health

HEALTH_TABLE = "health"


def health_query(database):
    """The balancer's check query: one row only while the node is Synced, ready and in a Primary
    component (a Donor/Desynced node must not take traffic). Needs SELECT on ``database`` only:
    ``information_schema.GLOBAL_STATUS`` is readable by every user."""
    if not re.fullmatch(r"\w{1,64}", database):
        raise MailhaError(f"monitoring database name {database!r} is not a plain identifier")

    def var(name, value):
        return (f"(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
                f"WHERE VARIABLE_NAME='{name}')='{value}'")

    return (f"SELECT h.ok FROM `{database}`.`{HEALTH_TABLE}` h WHERE h.ok=1"
            f" AND {var('WSREP_LOCAL_STATE_COMMENT', 'Synced')}"
            f" AND {var('WSREP_CLUSTER_STATUS', 'Primary')}"
            f" AND {var('WSREP_READY', 'ON')}")


# ----------------------------------------------------------------------------------- recovery


def report_from_answer(node, answer):
    """A member's ``mailha_galera.position`` answer (a dict, or None/error text when the minion
    did not answer) -> NodeReport. Anything malformed becomes a report with an error, never a
    guessed position."""
    if not isinstance(answer, dict):
        why = "minion did not answer" if not answer else f"minion error: {str(answer).splitlines()[0][:200]}"
        return NodeReport(node, error=why)
    try:
        status = answer.get("status")
        st = None
        if isinstance(status, dict) and "wsrep_cluster_status" in status:
            st = WsrepStatus(int(status["wsrep_cluster_size"]), str(status["wsrep_cluster_status"]),
                             str(status["wsrep_local_state_comment"]), bool(status["wsrep_ready"]),
                             bool(status["wsrep_connected"]), str(status["wsrep_cluster_state_uuid"]),
                             int(status["wsrep_last_committed"]))
        pos = GaleraPosition.parse(answer["position"]) if answer.get("position") else None
        if answer.get("running") and st is not None:
            pos = None  # a running node's history is its live status
        incomplete = answer.get("incomplete") or ()
        if not isinstance(incomplete, (list, tuple)) or not all(isinstance(w, str) for w in incomplete):
            raise TypeError("'incomplete' is not a list of texts")
        error = answer.get("error") or (None if pos or st or incomplete else "no position reported")
        return NodeReport(node, running=bool(answer.get("running")), status=st, position=pos,
                          safe_to_bootstrap=bool(answer.get("safe_to_bootstrap")), error=error,
                          incomplete=tuple(incomplete))
    except (KeyError, TypeError, ValueError, ParseError) as exc:
        return NodeReport(node, error=f"unusable answer ({exc})")


def check_member(answer, uuid, seqno=None):
    """What is wrong with a started member's answer (``mailha_galera.bootstrap``/``join``/...:
    its wsrep status once Synced) against the history it must continue: ``uuid`` and, when
    known, at least ``seqno``. None when it holds."""
    if not isinstance(answer, dict) or not answer.get("synced"):
        return "it is not Synced in a Primary component"
    got_uuid = str(answer.get("wsrep_cluster_state_uuid") or "")
    try:
        got = int(answer.get("wsrep_last_committed"))
    except (TypeError, ValueError):
        got = -1
    if got_uuid != uuid:
        return f"it came up in cluster {got_uuid or 'unknown'}:{got}, not {uuid}"
    if seqno is not None and seqno >= 0 and got < seqno:
        return f"it came up at seqno {got}, below the planned {seqno}: transactions are missing"
    return None


def recover_cluster(policy, ask, act, apply=False, parallel_joins=True):  # noqa: C901
    """Gather, decide, and (with ``apply``) carry out a Galera recovery.

    ``ask(node)`` returns that member's ``mailha_galera.position`` answer (None when it did not
    answer); ``act(node, action, position)`` runs ``mailha_galera.<action>`` there with
    ``position`` (``uuid:seqno`` or None) and returns its answer, raising or returning a
    non-dict on failure. The runner passes Salt calls; tests can pass anything.

    Returns ``{"plan": ..., "reason": ..., "positions": ..., "applied": [...], "result": bool}``.
    The first step (bootstrap) must succeed and continue the planned history (cluster UUID, at
    least the planned seqno) before any join starts; when it does not, the bootstrapped node is
    stopped (clients must not write into a wrong history) and nothing else is touched. Every
    member that joins must then be in that same history. ``result`` is True only when all of
    this holds.
    """
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def safe_ask(m):
        try:
            return ask(m)
        except Exception as exc:  # noqa: BLE001 - an unreachable member is a report, not a crash
            return f"{type(exc).__name__}: {exc}"

    members = tuple(policy.members)
    with ThreadPoolExecutor(max(1, len(members))) as pool:  # --wsrep-recover runs on all at once
        answers = dict(zip(members, pool.map(safe_ask, members), strict=True))
    reports = {m: report_from_answer(m, answers[m]) for m in members}
    action, reason = choose_bootstrap_node(reports, policy)
    out = {
        "plan": action.as_dict(),
        "reason": reason,
        "positions": {m: {"running": r.running,
                          "position": str(r.effective_position) if r.effective_position else None,
                          "safe_to_bootstrap": r.safe_to_bootstrap, "error": r.error,
                          "complete": not r.incomplete, "incomplete": list(r.incomplete)}
                      for m, r in reports.items()},
        "applied": [],
        "result": action.kind != "refuse",
    }
    if not apply or action.kind in ("refuse", "none"):
        return out

    def run(step, uuid=None, seqno=None):
        try:
            res = act(step.node, step.action, str(step.position) if step.position else None)
        except Exception as exc:  # noqa: BLE001 - a failed step is an outcome with its reason
            res = f"{type(exc).__name__}: {exc}"
        problem = check_member(res, uuid, seqno) if uuid else (
            None if isinstance(res, dict) and res.get("synced") else "it is not Synced in a Primary component")
        entry = {"node": step.node, "action": step.action, "ok": problem is None,
                 "result": res if isinstance(res, dict) else str(res)[:500]}
        if problem:
            entry["problem"] = problem
        return entry

    steps = list(action.steps)
    if action.kind == "join":
        lead = reports[action.node].status
        uuid, seqno = lead.cluster_state_uuid, None
    else:
        first_step = steps.pop(0)
        planned = first_step.position if first_step.position and not first_step.position.empty else None
        first = run(first_step, planned.uuid if planned else None, planned.seqno if planned else None)
        out["applied"].append(first)
        if not first["ok"]:
            out["result"] = False
            out["reason"] += (f"; {first['action']} of {first['node']} failed ({first.get('problem')}), "
                              f"nothing else was started")
            if planned and isinstance(first["result"], dict) and first["result"].get("synced"):
                stopped = act(first_step.node, "stop", None)
                out["applied"].append({"node": first_step.node, "action": "stop",
                                       "ok": isinstance(stopped, dict) and bool(stopped.get("stopped")),
                                       "result": stopped if isinstance(stopped, dict) else str(stopped)[:500]})
                out["reason"] += (f"; {first_step.node} was stopped so that no client writes into "
                                  f"that history; the other members are untouched")
            return out
        uuid = planned.uuid if planned else str(first["result"].get("wsrep_cluster_state_uuid") or "")
        seqno = planned.seqno if planned else None
    if parallel_joins and len(steps) > 1:
        with ThreadPoolExecutor(len(steps)) as pool:
            out["applied"] += list(pool.map(lambda st: run(st, uuid, seqno), steps))
    else:
        out["applied"] += [run(st, uuid, seqno) for st in steps]
    out["result"] = all(a["ok"] for a in out["applied"])
    bad = [f"{a['node']}: {a['problem']}" for a in out["applied"] if a.get("problem")]
    if bad:
        out["reason"] += "; " + "; ".join(bad)
    return out
