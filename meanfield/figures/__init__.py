"""Figures of run directories, one module per experiment family.

Each figure function reads a run directory alone (never simulates) and writes PNGs into its
``figures/`` through :func:`meanfield.plotting.save_figure`; an experiment names its figure
function as ``FIGURES``.  Nothing here imports an experiment (``tests/test_imports.py``).
"""
