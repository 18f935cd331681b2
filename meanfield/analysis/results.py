"""The summary file of a finished run: ``results.json``.

The ResNet experiments (resnet-limit, resnet-rkhs, resnet-digits, linear-obstruction)
write their analysed results into ``results.json`` when their last phase ends (docs/design.md
§3); :func:`read_results` reads it back for figures, notebooks and users.  It lives here (not
in ``meanfield.io``, the run directory's generic formats) because it reads a finished run's
analysed summary, and because figures and notebooks read it without importing an
experiment.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

RESULTS = "results.json"


def read_results(run_dir) -> dict:
    """The ``results.json`` of a finished run directory ``run_dir``, as a dict;
    ``ConfigError`` when it is missing (the run has not finished)."""
    p = Path(run_dir) / RESULTS
    if not p.exists():
        raise ConfigError(f"{run_dir} has no {RESULTS} yet (the run has not finished)")
    return json.loads(p.read_text())


__all__ = ["RESULTS", "read_results"]
