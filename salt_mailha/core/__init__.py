"""Pure Python core of salt-mailha: models, validation, renderers, parsers and decisions.

Nothing in this package imports ``salt`` (a unit test enforces it), so every decision can be
tested as a plain function of its inputs.
"""
