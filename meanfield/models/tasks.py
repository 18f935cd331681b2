"""Tasks: the data law (x, y) a two-layer mean-field network is trained on.

This module holds the tasks whose inputs are not Gaussian:

* :class:`FiniteDataset`: the empirical risk of a fixed dataset (X [n, d], Y [n]) with the
  squared or the logistic loss (labels ±1); exact full-batch potentials, minibatches drawn
  with replacement, and a measure evaluated on the data without gradients (outputs, risk,
  accuracy, normalised margin);
* :class:`ConfiningPotential`: no data and no interaction, V(θ) = (k/2)|θ − c|², whose
  Langevin dynamics are independent Ornstein–Uhlenbeck processes (the reference for
  testing them).

It is also where every task and the task interface are imported from: it re-exports the
public names of ``models.task_base`` (the risk, Ψ and loss conventions; :class:`Task`,
:class:`Potential`, :func:`loss_terms`, ``LOSSES``, :func:`as_batched`, :func:`as_weights`,
:func:`uniform_weights`) and of ``models.gaussian_tasks`` (:class:`TeacherStudent`,
:class:`IsotropicGaussians`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import ConfigError, check_finite_float, check_positive_int
from .gaussian_tasks import IsotropicGaussians, TeacherStudent
from .task_base import (LOSSES, Potential, Task, _on_generator, as_batched, as_weights, loss_terms,
                        uniform_weights)
from .units import Unit

__all__ = ["ConfiningPotential", "FiniteDataset", "IsotropicGaussians", "LOSSES", "Potential", "Task",
           "TeacherStudent", "as_batched", "as_weights", "loss_terms", "uniform_weights"]


class FiniteDataset(Task):
    """The empirical risk of a fixed dataset (X [n, d], Y [n]):

        squared  (default):  R = (1/n) Σ_k (Y_k − f(X_k))²,
        logistic (Y ∈ {−1, +1}):  R = (1/n) Σ_k log(1 + e^{−Y_k f(X_k)})

    (no ½; Ψ = ½ δR/δρ, see ``models.task_base``).  ``sample`` draws a minibatch with
    replacement; ``full()`` returns the whole dataset, so that ``sample_potential(θ, m,
    *task.full())`` is the exact empirical Ψ, ∇Ψ, R (``has_population``: population drift is
    full-batch gradient descent).  :meth:`outputs`, :meth:`risk`, :meth:`accuracy` and
    :meth:`margin` evaluate a measure on the data without gradients.

    ``ConfigError`` for X not [n, d] with the unit's d, Y not [n], n < 1, non-finite entries,
    an unknown loss, or logistic labels outside {−1, +1}.
    """

    name = "dataset"
    finite_data = True

    def __init__(self, unit: Unit, X, Y, *, loss: str = "squared"):
        self.unit = unit
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        self.loss = loss
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        Y = torch.as_tensor(np.asarray(Y), dtype=torch.float64)
        if X.dim() != 2 or X.shape[1] != unit.d:
            raise ConfigError(f"X must have shape [n, {unit.d}], got {list(X.shape)}")
        if Y.shape != (X.shape[0],):
            raise ConfigError(f"Y must have shape [{X.shape[0]}], got {list(Y.shape)}")
        if X.shape[0] < 1:
            raise ConfigError("the dataset has no points")
        if not (torch.isfinite(X).all() and torch.isfinite(Y).all()):
            raise ConfigError("the dataset has non-finite entries")
        if loss == "logistic" and not ((Y == 1) | (Y == -1)).all():
            bad = sorted({float(v) for v in Y[(Y != 1) & (Y != -1)][:5]})
            raise ConfigError(f"the logistic loss needs labels y in {{-1, +1}}, got e.g. {bad}")
        self.X, self.Y = X, Y

    @property
    def has_population(self) -> bool:
        return True

    def population_potential(self, theta, weights, pair_sum=None):
        """The exact empirical Ψ, ∇Ψ, R (a full batch; no standard error)."""
        x, y = self.full(theta.dtype, theta.device)
        pot = self.sample_potential(theta, weights, x, y)
        pot.risk_se = None
        return pot

    def full(self, dtype=torch.float32, device=None):
        """(X [1, n, d], Y [1, n])."""
        return self.X.to(dtype=dtype, device=device)[None], self.Y.to(dtype=dtype, device=device)[None]

    def sample(self, n, *, generator, batch=1, dtype=torch.float32, device=None):
        n = check_positive_int("n", n)
        idx = torch.randint(0, self.X.shape[0], (batch, n), generator=generator,
                            device=_on_generator(generator))
        idx = idx if device is None else idx.to(device)
        X, Y = self.X.to(dtype=dtype, device=device), self.Y.to(dtype=dtype, device=device)
        return X[idx], Y[idx]

    # ---- evaluation without gradients ---------------------------------------------------
    def outputs(self, theta, weights=None) -> torch.Tensor:
        """f(X_k; ρ_N) = Σ_i m_i φ(X_k; θ_i) on every data point, [B, n] (θ [N, D] or
        [B, N, D], in θ's dtype)."""
        theta = as_batched(theta)
        self.unit.check_theta(theta)
        m = as_weights(weights, theta)
        x, _ = self.full(theta.dtype, theta.device)
        with torch.no_grad():
            return self.unit.network(x, theta, m)

    def risk(self, theta, weights=None) -> torch.Tensor:
        """R(ρ_N) per replica [B] (the task's loss, no ½), without gradients."""
        f = self.outputs(theta, weights)
        return loss_terms(self.loss, f, self.Y.to(f)[None])[1].mean(-1)

    def accuracy(self, theta, weights=None) -> torch.Tensor:
        """The fraction of points with sign f(X_k) = Y_k, per replica [B] (f = 0 counts as
        wrong); meaningful for labels ±1."""
        f = self.outputs(theta, weights)
        return (torch.sign(f) == self.Y.to(f)[None]).to(torch.float64).mean(-1)

    def margin(self, theta, weights=None) -> torch.Tensor:
        """The normalised margin min_k Y_k f(X_k; ρ_N) / ∫|θ|^L dρ_N per replica [B], for
        labels ±1 and units positively L-homogeneous in θ (``Unit.homogeneity``: L = 2 for
        a·relu(⟨w, x⟩ + b) and a·⟨w, x⟩ + a·b, with or without bias; L = 1 without output
        weight).  Scaling every θ_i by r > 0 scales f by r^L, so the ratio depends on the
        directions only; for L = 2 it is Chizat–Bach's (2020) normalised margin, whose
        maximisers the logistic-loss gradient flow of wide networks approaches.  Positive iff
        every point is classified correctly.  ``ConfigError`` for other units or labels."""
        L = self.unit.homogeneity
        if L is None:
            raise ConfigError(
                f"the normalised margin needs a positively homogeneous unit (relu or linear "
                f"activation), got activation {self.unit.activation.name!r}")
        if not ((self.Y == 1) | (self.Y == -1)).all():
            raise ConfigError("the margin needs labels y in {-1, +1}")
        theta = as_batched(theta)
        f = self.outputs(theta, weights)
        m = as_weights(weights, theta).to(f)
        th = theta.to(f)
        norm = (th * th).sum(-1) if L == 2 else th.norm(dim=-1)           # (B, N): |θ_i|^L
        return (self.Y.to(f)[None] * f).min(-1).values / (norm * m).sum(-1)

    @property
    def risk_sharp(self):
        """The risk of the zero network f ≡ 0: R_# = (1/n) Σ_k Y_k² (squared), log 2 (logistic)."""
        if self.loss == "logistic":
            return math.log(2.0)
        return float((self.Y ** 2).mean())

    def to_dict(self):
        """{"name", "unit", "n": the number of data points, "loss"} (JSON-serialisable); X and
        Y are in :meth:`arrays`."""
        return {**super().to_dict(), "n": int(self.X.shape[0]), "loss": self.loss}

    def arrays(self):
        return {"data_X": self.X.numpy(), "data_Y": self.Y.numpy()}


class ConfiningPotential(Task):
    """A task with no interaction: V(θ) = (k/2)|θ − c|², U ≡ 0, R_# = 0, so Ψ = V and
    R(ρ) = 2 ∫ V dρ.  With λ and β the particles are independent Ornstein–Uhlenbeck
    processes whose Gibbs law exp(−β Ψ_λ) is the Gaussian of mean k c/(k + λ) and
    variance 1/(β (k + λ)) per coordinate: the reference for testing Langevin dynamics.
    """

    name = "confining"

    def __init__(self, D: int, stiffness: float = 1.0, center=0.0):
        self._D = check_positive_int("D", D)
        self.stiffness = check_finite_float("stiffness", stiffness, nonnegative=True)
        c = torch.as_tensor(center, dtype=torch.float64)
        if c.dim() > 1 or (c.dim() == 1 and c.shape[0] != self._D):
            raise ConfigError(f"center must be a scalar or have length D={self._D}")
        self.center = c.expand(self._D).clone() if c.dim() == 0 else c
        self.unit = None

    @property
    def D(self):
        """The dimension D of θ (there is no unit)."""
        return self._D

    @property
    def param_names(self):
        """["theta0", …, "theta{D−1}"]."""
        return [f"theta{k}" for k in range(self._D)]

    def check_theta(self, theta):
        """``ConfigError`` unless θ's last dimension is D."""
        if theta.shape[-1] != self._D:
            raise ConfigError(f"parameters have last dimension {theta.shape[-1]}, expected D={self._D}")

    @property
    def has_population(self):
        return True

    @property
    def risk_sharp(self):
        return 0.0

    def population_potential(self, theta, weights, pair_sum=None):
        diff = theta - self.center.to(theta.dtype)
        V = 0.5 * self.stiffness * (diff * diff).sum(-1)
        return Potential(psi=V, grad=self.stiffness * diff, risk=2 * (V * weights).sum(-1), V=V)

    def sample(self, n, **kw):
        raise ConfigError("the confining-potential task has no data to sample")

    def to_dict(self):
        """{"name", "D", "stiffness": k, "center": c as a list} (JSON-serialisable; these
        rebuild the task)."""
        return {"name": self.name, "D": self._D, "stiffness": self.stiffness,
                "center": self.center.tolist()}
