"""The mailha runner: cluster status, drain/undrain, automatic remediation (and Galera recovery).

Remediation (``remediate``, ``presence``, ``reconcile``, ``drain``, ``undrain``, ``status``)
--------------------------------------------------------------------------------------------
The reactor (``reactor/*.sls``) calls :func:`remediate` (:func:`presence`) directly for every
health (presence) event. The event is only a trigger:

1. every field is validated against the site model (the node must be a node id of
   ``mailha:nodes``; the reporter a minion id); nothing from an event reaches a command otherwise;
2. a report about a node counts only if it comes from a load balancer, from the node itself or
   from the master (``salt_mailha.core.remediation.assess_claim``): a mail minion claiming that
   another mail node is down changes nothing;
3. one re-check per node at a time (``salt_mailha.core.remediation.NodeGate``): a report that
   comes while the node is re-checked queues one follow-up re-check; any further report is
   folded into that queued one and returns at once (outcome ``coalesced``, no event; the
   covering decision counts it in ``folded``). A flood of events costs one cheap runner call
   each and a few re-checks in all, and a change during a re-check is never lost;
4. the node is re-probed from every load balancer (``mailha_health.probe`` through
   ``LocalClient``): the balancers are authoritative for reachability;
5. ``salt_mailha.core.remediation.plan_remediation`` decides (hysteresis, rate limit, operator
   drains, last MX) and returns a reason sentence; the plan is applied: ``mailha_ipvs.drain`` /
   ``undrain`` on every balancer (ldirectord's maintenance mechanism) and
   ``mailha_dns.withdraw_mx`` / ``restore_mx`` on the DNS updater minion;
6. every decision is logged and fired as an event ``mailha/remediation/<node>/<outcome>`` with
   its reason (outcome: ``drained``, ``restored``, ``noop``, ``ignored``, ``planned``,
   ``failed``, ``refused``; ``<node>`` is ``invalid`` when the event named no valid node id).
   Payload (also the runner's return)::

       {"node": "mail1", "result": True, "outcome": "drained", "verdict": "down",
        "reason": "mail1 failed the re-check (...); draining it on lb1, lb2 and withdrawing its MX",
        "actions": [{"kind": "drain", "node": "mail1", "target": "lb1", "ok": True,
                     "detail": "..."}, ...],
        "test": False, "master": "master1", "reporter": "lb2", "claimed": "down",
        "source": "event", "folded": 0, "seconds": 0.84,
        "phases": {"site": 0.0, "wait": 0.01, "recheck": 0.35, "apply": 0.47}}

   ``folded``: reports this master process folded into this re-check (see 3); ``phases``: where
   the ``seconds`` went (the site model, compiled from the pillar when the cache expired;
   waiting for the gate and the state lock; re-check; actions).

What was done (who drained a node, when, the automatic actions of the rate-limit window) is kept
in ``<cachedir>/mailha/remediation-<site>.json`` on the master, under an exclusive ``flock`` so
concurrent reactions (the reactor runs them in parallel threads) apply one at a time.

Several masters: only one may act. Either point ``mailha_state_dir`` of every master at one
shared directory (the lock and the state are then shared: the first master takes the lock and
acts, the others find the work done), or name the acting master with ``mailha_acting_master:
<master id>`` in every master's config (the others only plan, as with ``test=True``).

Master options: ``mailha_state_dir`` (default ``<cachedir>/mailha``), ``mailha_acting_master``,
``mailha_pillar_id`` (the minion id whose pillar holds the site; default: the master's id),
``mailha_probe_timeout`` (seconds per probe, default 1), ``mailha_job_startup`` (seconds a balancer
may take to start and return a re-check job on top of its probes, default 10; the re-check returns
as soon as every balancer answered), ``mailha_call_timeout`` (seconds to wait for minions,
default 10).
"""

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import tempfile
import time

import salt.client
import salt.config
import salt.pillar
import salt.utils.event

from salt_mailha.core import health
from salt_mailha.core import remediation as rem
from salt_mailha.core.errors import MailhaError, Refused, ValidationError
from salt_mailha.core.model import NO_SECRETS, load_site, secret_fields
from salt_mailha.core.secret import redact
from salt_mailha.data import merge

log = logging.getLogger(__name__)

__virtualname__ = "mailha"


def __virtual__():
    return __virtualname__


# ----------------------------------------------------------------------------- shared helpers


_SITE_CACHE = {}
_MAX_RETRY_WAIT = 30.0  # seconds a reaction may wait to re-check a node held by the hysteresis


def _compile_pillar(minion_id):
    return salt.pillar.get_pillar(
        __opts__, __opts__.get("grains", {}), minion_id, saltenv=__opts__.get("saltenv")
    ).compile_pillar()


def _site():
    """The site model from the pillar the master compiles for ``mailha_pillar_id``.

    Compiling the pillar costs about half a second, which a reaction to a failure should not pay
    every time: the model is reused for ``mailha_site_cache`` seconds (default 10; 0 disables).
    """
    minion_id = __opts__.get("mailha_pillar_id") or __opts__["id"]
    ttl = float(__opts__.get("mailha_site_cache", 10))
    cached = _SITE_CACHE.get(minion_id)
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1]
    pillar = _compile_pillar(minion_id)
    # The master acts on the topology: it needs no node's secrets (least privilege).
    site = load_site(pillar, node=NO_SECRETS)
    _SITE_CACHE[minion_id] = (time.monotonic(), site)
    return site


_CLIENT_OPTS = {}


def _client():
    # From the master's config file, as Salt's own runners do: inside the reactor the runner's
    # __opts__ do not authenticate a LocalClient (AuthenticationError). The file is parsed once
    # per process: a reaction makes two clients and parsing cost more than the publish.
    conf = __opts__["conf_file"]
    if conf not in _CLIENT_OPTS:
        _CLIENT_OPTS[conf] = salt.config.client_config(conf)
    return salt.client.get_local_client(mopts=dict(_CLIENT_OPTS[conf]))


def _fire(tag, data):
    with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False) as ev:
        ev.fire_event(data, tag)


# ----------------------------------------------------------------------------- remediation state


def _state_dir():
    return __opts__.get("mailha_state_dir") or os.path.join(__opts__["cachedir"], "mailha")


@contextlib.contextmanager
def _locked(site, timeout=120.0):
    """Exclusive lock on the site's remediation state (threads and processes, several masters
    when the state dir is shared)."""
    os.makedirs(_state_dir(), mode=0o700, exist_ok=True)
    path = os.path.join(_state_dir(), f"remediation-{site.name}.lock")
    with open(path, "a+") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Refused(f"another remediation of site {site.name} held {path} for "
                                  f"{timeout:g} s; nothing done") from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _state_path(site):
    return os.path.join(_state_dir(), f"remediation-{site.name}.json")


def _load_state(site):
    try:
        with open(_state_path(site), encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raw = {}
    except ValueError as exc:
        raise Refused(f"remediation state {_state_path(site)} is not valid JSON ({exc}); "
                      "fix or remove it (drains recorded there will be forgotten)") from None
    records = {n: rem.NodeRecord.from_dict(r) for n, r in (raw.get("nodes") or {}).items()
               if site.has_node(n)}
    return {"nodes": records}


def _save_state(site, state):
    data = {"nodes": {n: r.as_dict() for n, r in sorted(state["nodes"].items())}}
    fd, tmp = tempfile.mkstemp(dir=_state_dir(), prefix=".remediation-")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, _state_path(site))


# ----------------------------------------------------------------------------- facts and actions


def _balancers(site):
    return tuple(n.id for n in site.nodes_with("lb"))


def _policy(site):
    return rem.Policy.from_spec(site.remediation)


def _recheck_wait(site, attempts):
    """Seconds the re-check waits for the balancers' answers, and the probe timeout.

    The probes themselves take up to ``mailha_probe_timeout`` per attempt plus the site's
    ``probe_interval`` between attempts; on top of that each balancer's minion must receive the
    job, start it (a new process that loads the module) and return it: up to
    ``mailha_job_startup`` seconds (default 10). A loaded or emulated balancer needs seconds for
    that; under qemu TCG the answers came after the re-check gave up, and the verdict was
    "unknown". ``LocalClient.cmd`` returns as soon as every balancer answered, so the allowance
    costs time only while a balancer does not answer at all. Past the wait, Salt asks the silent
    balancers whether they still run the job (``saltutil.find_job``, answers awaited up to the
    master's ``gather_job_timeout``) and waits on for those that say so. The wait is handed over
    in whole seconds: ``LocalClient.cmd`` silently replaces a float timeout with the master's
    ``timeout`` option (5 s by default), which is what the re-check waited before, whatever it
    computed.
    """
    values = {}
    for key, default, low in (("mailha_probe_timeout", 1.0, 0.01), ("mailha_job_startup", 10.0, 0.0)):
        raw = __opts__.get(key, default)
        try:
            values[key] = float(raw)
        except (TypeError, ValueError):
            values[key] = None
        if isinstance(raw, bool) or values[key] is None or not low <= values[key] <= 3600:
            raise MailhaError(f"master option {key}: {raw!r} is not a number of seconds in "
                              f"[{low:g}, 3600]; fix it in the master config (default {default:g})")
    probe, startup = values["mailha_probe_timeout"], values["mailha_job_startup"]
    wait = probe * attempts + site.remediation.probe_interval * (attempts - 1) + startup
    return math.ceil(wait), probe


def _recheck(site, node, attempts=1):
    """Probe ``node`` from every balancer now; one Observation per balancer (``None`` for a
    balancer that did not answer within :func:`_recheck_wait`)."""
    lbs = _balancers(site)
    wait, timeout = _recheck_wait(site, attempts)
    with _client() as client:
        ret = client.cmd(list(lbs), "mailha_health.probe", [node], tgt_type="list",
                         kwarg={"timeout": timeout, "attempts": attempts}, timeout=wait)
    out = []
    for lb in lbs:
        answer = ret.get(lb)
        if isinstance(answer, dict) and answer.get("node") == node and "ok" in answer:
            out.append(rem.Observation(lb, bool(answer["ok"]), tuple(answer.get("failing") or ())))
        else:
            if answer is not None:
                log.warning("mailha remediation: %s could not probe %s: %s", lb, node,
                            str(answer)[:200])
            out.append(rem.Observation(lb, None))
    return tuple(out)


def _snapshot(site, state, node, observations):
    mx = site.dns.mx if site.dns is not None else {}
    others = [m for m in mx if m != node and not state["nodes"].get(m, rem.NodeRecord()).mx_withdrawn]
    return rem.Snapshot(node, _balancers(site), observations,
                        state["nodes"].get(node, rem.NodeRecord()), time.time(),
                        has_mx=node in mx, other_mx_in_service=len(others))


_CALLS = {rem.DRAIN: "mailha_ipvs.drain", rem.UNDRAIN: "mailha_ipvs.undrain",
          rem.WITHDRAW_MX: "mailha_dns.withdraw_mx", rem.RESTORE_MX: "mailha_dns.restore_mx"}


def _succeeded(answer):
    if answer is True:
        return True, "done"
    if isinstance(answer, dict):
        if answer.get("result") is False:
            return False, str(answer.get("comment") or answer.get("reason") or answer)[:300]
        return True, str(answer.get("comment") or "done")[:300]
    if answer is None:
        return False, "no answer from the minion"
    return False, str(answer)[:300]  # an exception text or "function not available"


def _call_list(targets, fun, node, wait):
    """``fun(node)`` on ``targets``; ``{minion: answer}`` (None: no answer). One client per call:
    ``LocalClient.cmd`` subscribes to the job's returns before publishing and closes after."""
    with _client() as client:
        ret = client.cmd(targets, fun, [node], tgt_type="list", timeout=wait) or {}
    # cmd() marks a minion that did not answer with False; our functions return dicts
    return {m: (None if answer is False else answer) for m, answer in ret.items()}


def _apply(site, plan):
    """Run the plan's actions; ``[(action, ok, detail)]``.

    The drains (or restores) and the MX change run at once, one thread and one ``cmd`` each:
    publishing several jobs on one client and collecting their returns one after the other
    dropped returns that came while another job's were awaited (an MX withdrawal that happened
    was recorded as failed), and subscribing before each publish (``run_job(listen=True)``)
    hung the reactor when it ran inside an orchestration.
    """
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    # Whole seconds: LocalClient.cmd silently replaces a float timeout with the master's
    # ``timeout`` (5 s), which a slow balancer's job outlasts (see _recheck_wait).
    wait = math.ceil(float(__opts__.get("mailha_call_timeout", 10)))
    node = plan.actions[0].node
    results, calls = [], []
    for kind in (rem.DRAIN, rem.UNDRAIN, rem.WITHDRAW_MX, rem.RESTORE_MX):
        actions = [a for a in plan.actions if a.kind == kind]
        if not actions:
            continue
        if kind in (rem.DRAIN, rem.UNDRAIN):
            targets = [a.target for a in actions]
        elif site.dns is None or not site.dns.updater:
            results += [(a, False, "mailha:dns:updater is not set") for a in actions]
            continue
        else:
            targets = [site.dns.updater]
        calls.append((actions, targets, _CALLS[kind]))
    if not calls:
        return results
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [(actions, targets, pool.submit(_call_list, targets, fun, node, wait))
                   for actions, targets, fun in calls]
        for actions, targets, future in futures:
            try:
                ret = future.result()
            except Exception as exc:  # noqa: BLE001 - a call that raised is a failed action
                ret = {t: f"{type(exc).__name__}: {exc}" for t in targets}
            for a in actions:
                target = a.target if a.kind in (rem.DRAIN, rem.UNDRAIN) else targets[0]
                ok, detail = _succeeded(ret.get(target))
                results.append((a, ok, detail))
    return results


def _record_after(old, plan, results):
    """The record to persist: the plan's, corrected for what did not happen.

    A drain that failed on every balancer did not happen, and a restore that failed on any
    balancer left the node drained there: the old record stays, so the next report or the
    reconcile schedule tries again (undrain is idempotent; recording a partial restore as done
    left the node at weight 0 on one balancer for good). A drain that reached some balancers is
    recorded: its restore undrains them all. An MX change that did happen is recorded all the
    same (or a withdrawn MX would never be restored). An MX change that failed is not recorded.
    """
    record = plan.record
    for kind in (rem.DRAIN, rem.UNDRAIN):
        tried = [ok for action, ok, _ in results if action.kind == kind]
        if tried and not (all(tried) if kind == rem.UNDRAIN else any(tried)):
            record = old
            for action, ok, _ in results:
                if ok and action.kind in (rem.WITHDRAW_MX, rem.RESTORE_MX):
                    record = dataclasses.replace(record, mx_withdrawn=action.kind == rem.WITHDRAW_MX)
            return record
    for action, ok, _ in results:
        if not ok and action.kind == rem.WITHDRAW_MX:
            record = rem.NodeRecord(record.drained_by, record.drained_at, False, record.actions)
        if not ok and action.kind == rem.RESTORE_MX:
            record = rem.NodeRecord(record.drained_by, record.drained_at, True, record.actions)
    return record


def _outcome(plan, test, results):
    if plan.verdict == "ignored":
        return plan.verdict
    if test:
        return "planned" if plan.actions else "noop"
    if results and not all(ok for _, ok, _ in results):
        return "failed"
    kinds = {a.kind for a in plan.actions}
    if rem.DRAIN in kinds:
        return "drained"
    if rem.UNDRAIN in kinds:
        return "restored"
    return "noop"


def _report(site, node, plan, test, results=(), started=None, **extra):
    outcome = _outcome(plan, test, results)
    if started is not None:
        extra["seconds"] = round(time.time() - started, 3)
    out = {
        "node": node,
        "result": outcome != "failed",
        "outcome": outcome,
        "verdict": plan.verdict,
        "reason": plan.reason,
        "test": bool(test),
        "master": __opts__["id"],
        "actions": [dict(a.as_dict(), **({"ok": ok, "detail": d} if results else {}))
                    for a, ok, d in (results or [(a, None, None) for a in plan.actions])],
        **extra,
    }
    out = redact(out, site.secrets())
    log.info("mailha remediation of %s: %s%s [%ss]", node, out["reason"], " (test)" if test else "",
             out.get("seconds", "-"))
    _fire(f"mailha/remediation/{node}/{outcome}", out)
    return out


def _acting(test):
    """``(test, note)``: a master that is not the acting one only plans."""
    acting = __opts__.get("mailha_acting_master")
    if acting and acting != __opts__["id"] and not test:
        return True, f"master {__opts__['id']} is not the acting master ({acting}); plan only"
    return bool(test), None


def _site_secrets():
    """The site's secrets for redaction, or none when the pillar itself cannot be read (then the
    reason is about the pillar, which validation words without values)."""
    try:
        return tuple(_site().secrets())
    except Exception:  # noqa: BLE001 - a refusal must be reported whatever broke
        return ()


def _refused(node, exc, outcome="refused", **extra):
    # the reason may quote what a minion or a state said: redacted before the log and the event
    reason = redact(str(exc), _site_secrets())
    log.warning("mailha remediation %s: %s", outcome, reason)
    out = {"node": str(node)[:64], "result": False, "outcome": outcome, "reason": reason,
           "actions": [], "master": __opts__["id"], **redact(extra, _site_secrets())}
    tag_node = node if isinstance(node, str) and rem._NODE_ID.match(node) else "invalid"
    _fire(f"mailha/remediation/{tag_node}/{outcome}", out)
    return out


# ----------------------------------------------------------------------------- public functions


def remediate(node, reporter=None, status=None, source="event", test=False):
    """Re-check ``node`` from the load balancers and drain or restore it as the policy says.

    node
        Node id from the event (validated against ``mailha:nodes``).
    reporter
        Minion id that reported the change (``data['id']`` of the beacon event); None when the
        master itself asks (presence, schedule, operator).
    status
        What the reporter claimed (``down``/``up``); logged only, never trusted.
    source
        Free text for the log and the event (``event``, ``presence``, ``reconcile``).
    test
        Plan only: re-check and decide, change nothing.

    Returns ``{"node", "result", "outcome", "verdict", "reason", "actions", "test", ...}``;
    outcome ``coalesced`` when the report was folded into a queued re-check of the same node.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.remediate mail1
        salt-run mailha.remediate mail1 test=True
    """
    started = time.time()
    try:
        site = _site()
        loaded = time.time()
        node = rem.check_node(node, {n.id for n in site.nodes})
        reporter = rem.check_minion_id(reporter)
        claim = str(status)[:8] if status is not None else None
        lbs = _balancers(site)
        recheck, why = rem.assess_claim(reporter, node, lbs)
        extra = {"reporter": reporter, "claimed": claim, "source": str(source)[:32],
                 "started": started, "phases": {"site": round(loaded - started, 3)}}
        if not recheck:
            return _report(site, node, rem.Plan((), why, rem.NodeRecord(), "ignored"), test,
                           **extra)
        if not health.targets(site, node):
            return _report(site, node, rem.Plan((), f"{node} holds no VIP: no balancer forwards "
                                                    "to it, nothing to drain", rem.NodeRecord(),
                                                "none"), test, **extra)
        test, note = _acting(test)
        if note:
            extra["note"] = note
        # plan-only reports queue apart: a real report folded into a plan would never be acted on
        gate = rem.NodeGate(_state_dir(), f"{site.name}.plan" if test else site.name)
        with gate.enter(node) as turn:
            if turn == rem.FOLDED:
                # No event and no log above debug: in a flood this path runs once per event.
                log.debug("mailha remediation of %s: report folded into the queued re-check",
                          node)
                return {"node": node, "result": True, "outcome": "coalesced", "verdict": "none",
                        "reason": f"a re-check of {node} is running and another is queued "
                                  "behind it; this report is folded into the queued one",
                        "actions": [], "test": test, "master": __opts__["id"],
                        **{k: v for k, v in extra.items() if k not in ("started", "phases")}}
            out, plan = _remediate_turn(site, node, reporter, test, gate, extra)
    except MailhaError as exc:
        return _refused(node, exc, reporter=str(reporter)[:64] if reporter else None)
    except Exception as exc:  # noqa: BLE001 - the reaction's boundary: a failed outcome, logged
        log.exception("mailha remediation of %s failed", str(node)[:64])
        return _refused(node, f"remediation of {str(node)[:64]} failed: "
                              f"{type(exc).__name__}: {exc}", outcome="failed")
    # Held back by the hysteresis: the beacon already said "up" and will not say it again, so
    # look again once the hold is over (outside the gate, so reports meanwhile re-check;
    # bounded, the schedule does the rest).
    # A plan-only call answers now: it must not wait, and its follow-up must not act.
    if plan.retry_after is not None and plan.retry_after <= _MAX_RETRY_WAIT and \
            source != "hysteresis" and not test:
        time.sleep(plan.retry_after + 0.05)
        return remediate(node, None, status, "hysteresis")
    return out


def _remediate_turn(site, node, reporter, test, gate, extra):
    """One re-check and decision of ``node``, with the node's gate held; ``(report, plan)``."""
    # A report a beacon already held down needs one confirming round; a bare trigger
    # (presence, schedule, the node's own word) gets the full hold-down from the balancers.
    attempts = 1 if reporter in _balancers(site) else site.remediation.down_after
    with _locked(site):
        state = _load_state(site)
        # taken as the re-check begins: every report folded so far came before it
        extra["folded"] = gate.take_folded(node)
        began = time.time()
        observations = _recheck(site, node, attempts)
        checked = time.time()
        snapshot = _snapshot(site, state, node, observations)
        plan = rem.plan_remediation(snapshot, _policy(site))
        # where the reaction's time went: site model, waiting (gate, state lock), re-check, actions
        phases = extra["phases"]
        phases["wait"] = round(began - extra["started"] - phases["site"], 3)
        phases["recheck"] = round(checked - began, 3)
        if test:
            return _report(site, node, plan, True, **extra), plan
        results = _apply(site, plan) if plan.actions else []
        extra["phases"]["apply"] = round(time.time() - checked, 3)
        state["nodes"][node] = _record_after(snapshot.record, plan, results)
        _save_state(site, state)
        return _report(site, node, plan, False, results, **extra), plan


def presence(new=None, lost=None, test=False):
    """Re-check the real servers among minions that appeared or disappeared.

    Fed by the master's presence events (``presence_events: True`` ->
    ``salt/presence/change``); minion ids that are not real servers of the site are skipped.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.presence lost='[mail2]'
    """
    site = _site()
    ids = [i for i in list(lost or []) + list(new or []) if isinstance(i, str)]
    wanted = [n for n in health.real_server_ids(site) if n in ids]
    return {n: remediate(n, None, None, "presence", test) for n in wanted}


def reconcile(test=False):
    """Re-check every real server (the master's schedule runs this every ``window`` seconds).

    Catches what an event cannot: a lost event, a restore held back by the rate limit.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.reconcile
    """
    site = _site()
    return {n: remediate(n, None, None, "reconcile", test) for n in health.real_server_ids(site)}


def _operator(node, planner, test):
    try:
        site = _site()
        node = rem.check_node(node, {n.id for n in site.nodes})
        if not health.targets(site, node):
            raise Refused(f"{node} holds no VIP: no balancer forwards to it, nothing to drain")
        with _locked(site):
            state = _load_state(site)
            observations = _recheck(site, node) if planner is rem.plan_operator_undrain else ()
            snapshot = _snapshot(site, state, node, observations)
            plan = planner(snapshot)
            if test:
                return _report(site, node, plan, True, source="operator")
            results = _apply(site, plan) if plan.actions else []
            state["nodes"][node] = _record_after(snapshot.record, plan, results)
            _save_state(site, state)
            return _report(site, node, plan, False, results, source="operator")
    except MailhaError as exc:
        return _refused(node, exc, source="operator")


def drain(node, test=False):
    """Take ``node`` out of service by hand: drained on every balancer, MX withdrawn.

    An operator's drain is never undone by automatic remediation; only :func:`undrain` ends it.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.drain mail2
        salt-run mailha.drain mail2 test=True
    """
    return _operator(node, rem.plan_operator_drain, test)


def undrain(node, test=False):
    """Return ``node`` to service on every balancer and restore its MX, whoever drained it.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.undrain mail2
    """
    return _operator(node, rem.plan_operator_undrain, test)


def validate():
    """Validate the whole site from the master, as every node receives it.

    The pillar is compiled for each node of ``mailha:nodes`` (its minion id is its node id) and
    parsed with the secrets of that node's roles required; no node may receive a secret its roles
    do not use, and every copy of a secret must be the same. Then the nodes' pillars merged must
    form one valid site. Returns ``{"site", "nodes", "valid", "problems"}`` (exit code 1 when
    invalid); each problem names the pillar key, the node and the fix. No secret is shown.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.validate
    """
    problems, merged, copies = [], {}, {}
    try:
        site = _site()
    except MailhaError as exc:
        return _invalid(None, 0, [str(exc)])
    for n in site.nodes:
        pillar = _compile_pillar(n.id)
        try:
            own = load_site(pillar, node=n.id)
        except ValidationError as exc:
            problems += [f"{n.id}: pillar {key}: {msg}" for key, msg in exc.problems]
            continue
        for key, value, users in secret_fields(own):
            if value is None:
                continue
            if n.id not in users:
                who = ", ".join(sorted(users)) or "no node (remove it from the pillar)"
                problems.append(f"{n.id}: pillar {key}: reaches {n.id}, whose roles "
                                f"({', '.join(n.roles)}) do not use it: assign it only to {who}")
            first = copies.setdefault(key, (n.id, value))
            if first[1] != value:
                problems.append(f"{n.id}: pillar {key}: differs from the copy {first[0]} receives: "
                                "keep each secret in one pillar file")
        merge(merged, pillar["mailha"])
    if not problems:
        try:
            load_site({"mailha": merged})
        except ValidationError as exc:
            problems += [f"pillar {key}: {msg}" for key, msg in exc.problems]
    if problems:
        return _invalid(site.name, len(site.nodes), problems)
    return {"site": site.name, "nodes": len(site.nodes), "valid": True, "problems": []}


def _invalid(name, nodes, problems):
    __context__["retcode"] = 1  # noqa: F821 - Salt dunder
    return {"site": name, "nodes": nodes, "valid": False, "problems": problems}


def _call(client, tgt, fun, args=(), timeout=5):
    try:
        ret = client.cmd(tgt, fun, list(args), tgt_type="list" if isinstance(tgt, list) else "glob",
                         timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - status reports what it could not read
        log.debug("mailha.status: %s on %s failed: %s", fun, tgt, exc)
        return {}
    return ret or {}


def status():
    """Every node: roles, service health, Galera state, LDAP agreement, IPVS weight on each
    balancer, MX present, drained by whom.

    Returns data, printed as one table by the ``mailha_status`` outputter (Salt's runner
    convention: ``{"data": ..., "outputter": ...}``, which ``salt-run`` unwraps); ``--out=json``
    or ``--out=yaml`` print the data itself::

        {"site": "example",
         "columns": ["roles", "health", "galera", "ldap", "weight@lb1", "weight@lb2", "mx",
                     "drained_by"],
         "nodes": {"mail1": {"roles": "mail", "health": "ok", "ldap": "agree",
                             "weight@lb1": "1", "weight@lb2": "1", "mx": "yes",
                             "drained_by": "-"}, ...}}

    A column a node has no value for is left out of its row (``-`` in the table); ``?`` means
    the minion that knows did not answer.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.status
        salt-run mailha.status --out=json
    """
    import salt.key  # noqa: PLC0415 - only status reads the key directory

    site = _site()
    with salt.key.get_key(__opts__) as keys:
        accepted = set(keys.list_status("acc").get("minions", []))
    return {"data": _status(site, accepted), "outputter": "mailha_status"}


def _ask_all(requests):
    """``{key: {minion: answer}}`` for ``{key: (targets, fun, args[, timeout])}``: every job published at
    once, one client (and thread) each (see _apply), so status costs the slowest job, not the
    sum of them all (a probe per real server on a slow balancer took seconds each)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def one(targets, fun, args, timeout=5):
        with _client() as client:
            return _call(client, targets, fun, args, timeout)

    wanted = {k: r for k, r in requests.items() if r[0]}
    if not wanted:
        return {k: {} for k in requests}
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {k: pool.submit(one, *r) for k, r in wanted.items()}
        return {k: futures[k].result() if k in futures else {} for k in requests}


def _status(site, accepted=None):
    """The status data; only minions in ``accepted`` (keys the master accepted) are asked: a
    target list naming none of them makes Salt print "No minions matched" into the output."""

    def known(ids):
        return [i for i in ids if accepted is None or i in accepted]

    lbs = list(_balancers(site))
    state = _load_state(site)
    reals = health.real_server_ids(site)
    rows = {}
    updater = site.dns.updater if site.dns else None
    wait = _recheck_wait(site, 1)[0]
    requests = {
        "mx": (known([updater] if updater else []), "mailha_dns.query", ["@", "MX"]),
        "galera": (known([n.id for n in site.galera_members()] if site.galera else []),
                   "mailha_galera.status", []),
        "ldap": (known([n.id for n in site.nodes_with("mail")])[:1] if site.ldap else [],
                 "mailha_ldap.replication_status", []),
        # the balancers' reads wait as long as a remediation's re-check does: several jobs at once
        # on a slow balancer took longer than the 5 s of the other reads (a UML balancer just
        # after `up` left its weights at "?")
        "ipvs": (known(lbs), "mailha_ipvs.list", [], wait),
        **{("probe", r): (known(lbs), "mailha_health.probe", [r], wait) for r in reals},
    }
    answers = _ask_all(requests)
    mx_now = answers["mx"].get(updater) if updater else None
    galera, ipvs = answers["galera"], answers["ipvs"]
    ldap_view = next(iter(answers["ldap"].values()), None)
    for n in site.nodes:
        row = {"roles": ",".join(n.roles)}
        if n.id in reals:
            views = answers[("probe", n.id)]
            failing = sorted({s for v in views.values() if isinstance(v, dict)
                              for s in v.get("failing", [])})
            answered = [v for v in views.values() if isinstance(v, dict) and "ok" in v]
            row["health"] = ("?" if not answered else "ok" if not failing
                             else "failing: " + ",".join(failing))
            addrs = set(n.addresses.values())
            for lb in lbs:
                table = ipvs.get(lb)
                weights = sorted({r.get("weight") for vs in table for r in vs.get("real_servers", ())
                                  if r.get("address") in addrs}) if isinstance(table, list) else "?"
                row[f"weight@{lb}"] = "/".join(map(str, weights)) if weights != "?" else "?"
            rec = state["nodes"].get(n.id, rem.NodeRecord())
            row["drained_by"] = rec.drained_by or "-"
        if site.galera and n in site.galera_members():
            g = galera.get(n.id)
            row["galera"] = (g.get("wsrep_local_state_comment") or g.get("state") or "?") \
                if isinstance(g, dict) else "?"
        if n.has("mail") and site.ldap:
            if isinstance(ldap_view, dict):
                behind = ldap_view.get("behind", {}).get(n.id)
                row["ldap"] = "agree" if ldap_view.get("agree") else (
                    f"behind {behind}" if behind else "disagree")
            else:
                row["ldap"] = "?"
        if site.dns and n.id in site.dns.mx:
            if isinstance(mx_now, list):
                row["mx"] = "yes" if any(r.rstrip(".").endswith(f" {n.fqdn}") for r in mx_now) \
                    else "no"
            else:
                row["mx"] = "?"
        rows[n.id] = row
    columns = ["roles", "health", "galera", "ldap"] + [f"weight@{lb}" for lb in lbs] + \
        ["mx", "drained_by"]
    return redact({"site": site.name, "columns": columns, "nodes": rows}, site.secrets())


# ----------------------------------------------------------------------------- Galera recovery
# Self-contained (owned by the Galera tier): gathers through LocalClient, decides and applies
# through salt_mailha.core.galera.recover_cluster, which takes one callable per step so it is
# tested against real members without a master.


def _galera_call(tgt, fun, kwarg=None, timeout=60):
    """One minion's answer to ``fun`` (None when it did not answer). A client per call: the
    gather and the joins run in parallel threads."""
    # From the master's config file when there is one: inside the reactor the runner's __opts__
    # do not authenticate a LocalClient.
    conf = __opts__.get("conf_file")
    client = salt.client.get_local_client(conf) if conf else salt.client.get_local_client(mopts=__opts__)
    with client:
        ret = client.cmd(tgt, fun, kwarg=kwarg or {}, timeout=timeout)
    return (ret or {}).get(tgt)


def galera_recover(apply=False, force=None, timeout=None):
    """Plan (and with ``apply=True`` carry out) bringing the Galera cluster back to a Primary
    component, from every member's own report.

    Gathers ``mailha_galera.position`` from every full member (db and quorum roles; minion ids are
    the node ids), then ``salt_mailha.core.galera.choose_bootstrap_node`` decides: join a live
    Primary component if there is one (never bootstrap next to it); otherwise, only if every
    member reported a position sharing one cluster UUID, bootstrap the highest seqno
    (``--wsrep-new-cluster`` with its ``--wsrep-start-position``, ``safe_to_bootstrap: 1`` on it
    only), wait until it is Synced, then start the others with their own positions. A member
    whose last state transfer did not finish (an SST marker in its datadir, an unfinished
    transfer in its error log, grastate.dat contradicting InnoDB) is never chosen and never
    sets a position: it resyncs by full SST after the bootstrap; with no complete copy anywhere,
    or every history at seqno -1, the plan refuses. ``force`` names the node to bootstrap when a
    member cannot report or no seqno is recoverable (an operator's decision); it never
    overrides a live Primary component, a UUID disagreement or an incomplete copy.

    After the bootstrap the node must be in the planned cluster UUID at (at least) the planned
    seqno before any join starts; otherwise it is stopped, nothing else is touched and the
    result is False. Every joined member is checked the same way. Refusals say why.

    Returns the plan, its reason, every member's position and, when applied, each step's result.
    Fires ``mailha/galera/recover/<planned|applied|refused|failed|none>`` with the reason.

    CLI Example:

    .. code-block:: bash

        salt-run mailha.galera_recover
        salt-run mailha.galera_recover apply=True
        salt-run mailha.galera_recover apply=True force=db2
    """
    from salt_mailha.core import galera as galera_core  # noqa: PLC0415 - keeps this section self-contained

    try:
        site = _site()
    except MailhaError as exc:
        return {"result": False, "reason": str(exc)}
    g = site.galera
    if g is None:
        return {"result": False, "reason": "the pillar has no mailha:galera section"}
    members = tuple(n.id for n in site.galera_members())
    if force is not None and force not in members:
        return {"result": False, "reason": f"force={force!r} is not a Galera member; use one of "
                                           f"{', '.join(members)}"}
    policy = galera_core.BootstrapPolicy(members, g.bootstrap_node, force)
    ask_timeout = int(timeout or __opts__.get("mailha_galera_ask_timeout", 120))
    start_timeout = int(timeout or g.join_timeout) + 60

    def ask(node):
        return _galera_call(node, "mailha_galera.position", timeout=ask_timeout)

    def act(node, action, position):
        kwarg = {"position": position} if position and action in ("bootstrap", "join") else {}
        if action in ("bootstrap", "join", "resync"):
            kwarg["timeout"] = int(timeout or g.join_timeout)
        return _galera_call(node, f"mailha_galera.{action}", kwarg=kwarg, timeout=start_timeout)

    result = galera_core.recover_cluster(policy, ask, act, apply=bool(apply))
    kind = result["plan"]["kind"]
    outcome = ("refused" if kind == "refuse" else "none" if kind == "none" else
               "planned" if not apply else "applied" if result["result"] else "failed")
    result["outcome"] = outcome
    log.warning("mailha.galera_recover: %s: %s", outcome, result["reason"])
    try:
        _fire(f"mailha/galera/recover/{outcome}", {"reason": result["reason"], "plan": result["plan"]})
    except Exception as exc:  # noqa: BLE001 - the event is a courtesy; the return says it all
        log.warning("mailha.galera_recover: could not fire the event: %s", exc)
    return redact(result, site.secrets())
