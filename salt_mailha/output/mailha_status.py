"""The ``mailha_status`` outputter: ``salt-run mailha.status`` as one table.

The runner returns data (``{"site": ..., "columns": [...], "nodes": {node: {column: value}}}``)
and declares this outputter as its default; ``--out=json`` or ``--out=yaml`` print the same
data structured. A cell is ``-`` when it does not apply to the node and ``?`` when the minion
that knows it did not answer. Anything else (an error string, another runner's data) is printed
by Salt's ``nested`` outputter.
"""

import salt.output

__virtualname__ = "mailha_status"


def __virtual__():
    return __virtualname__


def _cell(value):
    return "-" if value in (None, "", [], {}) else str(value)


def table(data):
    """The status data as text: a header line, then one line per node."""
    columns = list(data.get("columns") or [])
    lines = [["node"] + columns] + [[str(node)] + [_cell((row or {}).get(c)) for c in columns]
                                    for node, row in data["nodes"].items()]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
    return f"site {data.get('site', '?')}\n{text}"


def output(data, **kwargs):  # noqa: ARG001 - Salt's outputter interface
    if isinstance(data, dict) and isinstance(data.get("nodes"), dict):
        return table(data)
    return salt.output.out_format(data, "nested", __opts__)  # noqa: F821
