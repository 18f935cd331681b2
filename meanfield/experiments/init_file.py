"""Starting a two-layer run from a user's saved network: the ``init`` key (``--set init=FILE``).

FILE is a torch file holding ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))``, its
state dict, a ``TwoLayerModule`` or what ``meanfield export`` writes
(``models.twolayer_torch.load_module``).  Its network F(x) = Σ_j c_j σ(⟨w_j, x⟩ + b_j) + c0
is in the **data's own units**; a run that standardises (the ``dataset`` experiment:
x_s = (x − μ_x)/σ_x, and y_s = (y − μ_y)/σ_y for a regression) sees the same function as

    a_j = N c_j / σ_y,   w_j ⊙ σ_x,   b_j + ⟨w_j, μ_x⟩,   offset c = (c0 − μ_y)/σ_y,

exactly (the inverse of ``Run.to_module``'s folding, so an export starts a run where it
ended).  The offset is fixed (``models.twolayer_torch``: not a particle); the experiments
train c + f on labels y by training f on y − c (squared loss only).

The layout must match the run's: d, N, activation, hidden biases only when the unit has
them (or zero ones), output weights N c_j all 1 when it has none.  A mismatch is one
``ConfigError`` naming it and the key that fixes it.  config.json records
{"file", "sha256" (of the file's bytes), "offset"} under "init", so that resuming with a
changed file is refused (``runner.check_record``).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..models.twolayer_torch import load_module
from ..models.units import Unit


def read_init(path: str, unit: Unit, N: int, *, x_mean=None, x_std=None, y_mean: float = 0.0,
              y_std: float = 1.0, what: str = "the run") -> tuple[torch.Tensor, float, dict]:
    """(θ [N, D] float64 in ``unit``'s layout, offset c, the record for config.json) of the
    network in ``path`` seen in the run's units (module docstring; ``x_mean``/``x_std`` [d]
    or None, ``y_mean``/``y_std`` the run's scaling of y).  ``ConfigError`` naming the first
    mismatch of layout."""
    funit, meas, c0, sha = load_module(path, activation=unit.activation)
    theta = meas.positions.detach().to(torch.float64)
    where = f"init file {path}"
    if funit.d != unit.d:
        raise ConfigError(f"{where}: its network takes d = {funit.d} inputs, {what} has d = {unit.d}")
    if theta.shape[0] != N:
        raise ConfigError(f"{where}: its network has N = {theta.shape[0]} hidden units, {what} has "
                          f"N = {N} (--set N={theta.shape[0]})")
    if funit.activation != unit.activation:
        raise ConfigError(f"{where}: its activation is {funit.activation.name}, {what}'s "
                          f"{unit.activation.name} (--set activation={funit.activation.name})")
    a, w, b = funit.split(theta)
    b = torch.zeros(N, dtype=torch.float64) if b is None else b
    if x_std is not None:
        mu = torch.as_tensor(np.asarray(x_mean, dtype=np.float64))
        b = b + w @ mu
        w = w * torch.as_tensor(np.asarray(x_std, dtype=np.float64))
    a = a / y_std
    offset = (c0 - y_mean) / y_std
    if not unit.bias and bool((b != 0).any()):
        scale = float((w.abs().sum(-1) + 1).max()) * 1e-12
        if float(b.abs().max()) > scale:
            why = (" (the run standardises the features: x − μ_x adds ⟨w, μ_x⟩ to every bias)"
                   if x_std is not None else "")
            raise ConfigError(f"{where}: its hidden layer has biases{why}, {what}'s units have none "
                              "(--set bias=true)")
    if not unit.output_weight and not torch.allclose(a, torch.ones_like(a), rtol=1e-6, atol=0):
        raise ConfigError(f"{where}: its output weights N·c_j are not all 1 and {what}'s units have "
                          "no output weight (--set output_weight=true)")
    cols = ([a[:, None]] if unit.output_weight else []) + [w]
    if unit.bias:
        cols.append(b[:, None])
    record = {"file": str(path), "sha256": sha, "offset": float(offset)}
    return torch.cat(cols, -1), float(offset), record


__all__ = ["read_init"]
