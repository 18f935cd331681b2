"""Analysis of recorded runs: rates, fits, thresholds, baselines and tables.

Public functions that experiments, notebooks and users call on arrays or run directories;
nothing here runs a simulation and nothing imports an experiment (``tests/test_imports.py``).
Each module holds one kind of analysis; import it by name (``from meanfield.analysis import
rates``).
"""
