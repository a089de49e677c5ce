"""The benchmark scripts: each measures one claim of docs/results.md on the real app.

Run one from the repository root as a module, ``python -m benchmarks.<name>`` (``--help`` for its
flags, ``--quick`` for its short variant where it has one); benchmarks/README.md lists them all
with their run times and the section of docs/results.md each one feeds. The shared code:
:mod:`benchmarks.common` (in-process runs, tables, figures, the common flags) and
:mod:`benchmarks.vocab` (tasks, splits and methods by name).
"""
