"""Benchmarks, outside the installed packages: run from the repository root with ``python -m benchmarks.NAME``
(``make bench``, ``make bench-graph``) or, for the stand-alone ones, ``python benchmarks/NAME.py``."""
