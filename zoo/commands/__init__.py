"""The command layer: one module per `zoo` command group, each a thin click command
that parses, calls the engine, the exporters or the core, and prints.

`cli.py` (installed as `zoo.cli`) holds the group, the one-line error policy and the
table of these commands, imported only when invoked. Dependencies point one way:
zoo.cli -> zoo.commands -> zoo.engine / zoo.export -> the core (import-linter
checks it; see pyproject.toml).
"""
