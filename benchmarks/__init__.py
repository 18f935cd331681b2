"""Timing scripts (``python -m benchmarks.interact``, ``python -m benchmarks.sgd``); the
measured tables live in ``benchmarks/README.md``.  Baseline implementations (what a user
would write by hand) live here, never in the library."""
