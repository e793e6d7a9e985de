"""The ``mailha_status`` outputter through Salt's outputter loader: the runner's data as one
table; anything else falls back to Salt's nested outputter."""

import salt.config
import salt.loader
import salt.output

DATA = {"site": "example",
        "columns": ["roles", "health", "weight@lb1", "mx", "drained_by"],
        "nodes": {"lb1": {"roles": "lb"},
                  "mail1": {"roles": "mail", "health": "failing: imap", "weight@lb1": "0",
                            "mx": "no", "drained_by": "reactor"},
                  "mail2": {"roles": "mail", "health": "ok", "weight@lb1": "?", "mx": "yes",
                            "drained_by": "-"}}}


def render(data):
    opts = salt.config.master_config(None)
    opts["color"] = False
    outputters = salt.loader.outputters(opts)
    assert "mailha_status" in outputters
    return salt.output.out_format(data, "mailha_status", opts)


def test_table():
    assert render(DATA).splitlines() == [
        "site example",
        "node   roles  health         weight@lb1  mx   drained_by",
        "lb1    lb     -              -           -    -",
        "mail1  mail   failing: imap  0           no   reactor",
        "mail2  mail   ok             ?           yes  -",
    ]


def test_other_data_falls_back_to_nested():
    text = render({"error": "mailha.status: pillar mailha:nodes is empty"})
    assert "error:" in text and "pillar mailha:nodes is empty" in text
