"""Pure helpers: summarise Salt returns and print tables (unit-tested, no I/O)."""


def summarize_state_return(ret):
    """One minion's ``state.apply`` return -> ``(verdict, detail)``.

    ``verdict`` is ``ok``, ``failed`` or ``no return``; ``detail`` counts states and quotes the
    first failure (render errors come back as a list of strings, not a dict of states).
    """
    if ret is None or ret == "" or ret is False:
        return "no return", "the minion did not answer within the timeout"
    if isinstance(ret, str):
        return "failed", _first_line(ret)
    if isinstance(ret, list):
        return "failed", _first_line(ret[0] if ret else "empty error list")
    if not isinstance(ret, dict):
        return "failed", f"unexpected return {type(ret).__name__}"
    states = [v for v in ret.values() if isinstance(v, dict) and "result" in v]
    if not states:
        return "failed", "no state results"
    failed = [v for v in states if v.get("result") is False]
    changed = sum(1 for v in states if v.get("changes"))
    detail = f"{len(states)} states, {changed} changed, {len(failed)} failed"
    if failed:
        first = min(failed, key=lambda v: v.get("__run_num__", 0))
        return "failed", f"{detail}; first: {first.get('__id__', '?')}: " \
                         f"{_first_line(first.get('comment', ''))}"
    return "ok", detail


def _first_line(text, limit=160):
    """The informative line of a comment: a traceback's last line; a heading ending in ':'
    joined with the line after it."""
    lines = [li.strip() for li in str(text).strip().splitlines() if li.strip()]
    if not lines:
        return ""
    if lines[0].startswith("An exception occurred") or lines[0].startswith("Traceback"):
        line = lines[-1]
    elif lines[0].endswith(":") and len(lines) > 1:
        # "Problem ... follows:" / "errors:" / "- Running scope ..." / "E: Failed to fetch ..."
        useful = [li.lstrip("- ") for li in lines[1:] if not li.lstrip("- ").startswith(
            "Running scope as unit") and not li.endswith(":")]
        line = f"{lines[0]} {useful[0] if useful else lines[1].lstrip('- ')}"
    else:
        line = lines[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def table(headers, rows):
    """A plain-text table: columns padded to their widest cell, a rule under the header."""
    cells = [[str(c) for c in headers]] + [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def seconds(value):
    return "-" if value is None else f"{value:.1f}s"
