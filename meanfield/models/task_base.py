"""The task interface: what every task (the data law (x, y) a two-layer mean-field network is
trained on) provides and shares.

A task says WHAT is minimised: the risk

    R(ρ) = E[(y − f(x; ρ))²] = R_# + 2 ∫ V dρ + ∬ U dρ dρ,      (no ½; Mei–Montanari–Nguyen)
    V(θ) = −E[y φ(x; θ)],  U(θ, θ') = E[φ(x; θ) φ(x; θ')],  R_# = E[y²],
    Ψ(θ; ρ) = V(θ) + ∫ U(θ, θ') ρ(dθ') = E[(f(x; ρ) − y) φ(x; θ)].

Every task can *sample* (x, y) and estimate Ψ, ∇_θΨ and R from a batch
(:meth:`Task.sample_potential`, any activation).

**Losses.**  The squared loss above is the default of every task.  A finite dataset can use
the logistic loss instead (labels y ∈ {−1, +1}, Chizat–Bach 2020):

    R(ρ) = E[ℓ(y, f(x; ρ))],   ℓ(y, f) = log(1 + e^{−y f}),
    Ψ(θ; ρ) = ½ δR/δρ(θ) = E[½ ∂_fℓ(y, f(x; ρ)) φ(x; θ)],   ½ ∂_fℓ = −(y/2) σ(−y f)

(σ the logistic sigmoid): Ψ is again ½ the first variation of R, so the dynamics, the time
axis and the free energy ½R + (λ/2)∫|θ|² dρ − β⁻¹H(ρ) keep their meaning (docs/design.md §1).
For the squared loss ½∂_fℓ = f − y, the residual of the formulas above.  There is no V/U
decomposition for the logistic loss (R is not quadratic in ρ).  Tasks with ``closed_form = True``
(teacher–student with Gaussian inputs and a ReLU/erf unit without bias) also expose the
pair kernel U and the teacher as a weighted point set, so that
``meanfield.interact.evaluate`` computes Ψ, ∇Ψ and R exactly as pairwise sums.

Here: :class:`Potential` (Ψ, ∇Ψ, R at the particles), :class:`Task` (the base class: the
batch estimates of any task, the squared-loss V and U), :func:`loss_terms` and ``LOSSES``,
the shape helpers :func:`as_batched`, :func:`as_weights`, :func:`uniform_weights`, and the
random-number helpers the tasks draw with.  The tasks themselves are in
``models.gaussian_tasks`` (:class:`TeacherStudent`, :class:`IsotropicGaussians`) and
``models.tasks`` (:class:`FiniteDataset`, :class:`ConfiningPotential`), which re-exports the
public names of both other modules: import them from there or from ``meanfield.models``.

Shapes: θ [B, N, D] (B replicas of N particles), weights m [B or 1, N] (Σ_i m_i = 1),
x [B, n, d], y [B, n].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError
from .units import Unit


@dataclass
class Potential:
    """Ψ(θ_i; ρ), ∇_θΨ(θ_i; ρ) at every particle, and the risk R(ρ).

    psi [B, N], grad [B, N, D], risk [B]; ``risk_se`` [B] is the standard error of a Monte
    Carlo risk estimate (None when exact); ``V`` [B, N] when available.
    """

    psi: torch.Tensor
    grad: torch.Tensor
    risk: torch.Tensor
    risk_se: Optional[torch.Tensor] = None
    V: Optional[torch.Tensor] = None


def as_batched(theta: torch.Tensor) -> torch.Tensor:
    """θ [N, D] → [1, N, D]; θ [B, N, D] unchanged."""
    if not isinstance(theta, torch.Tensor):
        raise ConfigError(f"particle positions must be a torch.Tensor, got {type(theta).__name__}")
    if theta.dim() == 2:
        return theta.unsqueeze(0)
    if theta.dim() != 3:
        raise ConfigError(f"particle positions must have shape [N, D] or [B, N, D], got {list(theta.shape)}")
    return theta


def uniform_weights(theta: torch.Tensor) -> torch.Tensor:
    """m_i = 1/N as a [1, N] tensor matching θ [B, N, D]."""
    N = theta.shape[-2]
    return torch.full((1, N), 1.0 / N, dtype=theta.dtype, device=theta.device)


def as_weights(weights, theta: torch.Tensor) -> torch.Tensor:
    """Normalise weights (None, [N] or [B, N]) to a [B or 1, N] tensor of θ's dtype."""
    if weights is None:
        return uniform_weights(theta)
    w = torch.as_tensor(weights, dtype=theta.dtype, device=theta.device)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.shape[-1] != theta.shape[-2] or w.dim() != 2 or w.shape[0] not in (1, theta.shape[0]):
        raise ConfigError(f"weights of shape {list(w.shape)} do not match {theta.shape[-2]} particles")
    return w


LOSSES = ("squared", "logistic")


def loss_terms(loss: str, f: torch.Tensor, y: torch.Tensor):
    """(r, ℓ) for network outputs f and labels y (same shape): the half loss derivative
    r = ½ ∂_fℓ(y, f) and the loss ℓ(y, f) itself, both without ½ in ℓ (docs/design.md §1).

    squared:  r = f − y,              ℓ = (y − f)²;
    logistic: r = −(y/2) σ(−y f),     ℓ = log(1 + e^{−y f}) = logaddexp(0, −y f),
    both numerically stable for any f (``torch.sigmoid`` and ``torch.logaddexp``)."""
    if loss == "squared":
        r = f - y
        return r, r * r
    if loss == "logistic":
        m = -y * f
        return -0.5 * y * torch.sigmoid(m), torch.logaddexp(torch.zeros_like(m), m)
    raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")


class Task:
    """Base class: a unit and a data law.  Subclasses implement :meth:`sample`.

    ``loss`` is "squared" (every task) or "logistic" (:class:`FiniteDataset` with labels ±1);
    see the module docstring."""

    unit: Unit
    closed_form: bool = False
    name: str = "task"
    loss: str = "squared"

    # the network output is f(x; ρ) = Σ_i m_i φ(x; θ_i) with the loss applied to it (False
    # for a scaled or linearised model: the compiled SGD loop computes only the former)
    standard_model: bool = True
    # the task is a finite dataset: ``full()`` returns it (exact full-batch potentials)
    finite_data: bool = False

    def sample(self, n: int, *, generator: torch.Generator, batch: int = 1,
               dtype=torch.float32, device=None):
        """Draw x [batch, n, d] and y [batch, n] (independent across the batch)."""
        raise NotImplementedError

    def features(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """φ(x_k; θ_i) [B, n, N] for x [B, n, d], θ [B, N, D]: the features whose weighted sum
        is the network output (the unit's; a linearised model overrides them)."""
        return self.unit(x, theta)

    def feature_grad(self, x: torch.Tensor, theta: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Σ_k coef_k ∇_θφ(x_k; θ_i) [B, N, D] for coef [B, n] (the unit's)."""
        return self.unit.weighted_grad(x, theta, coef)

    @property
    def D(self) -> int:
        """Parameters per particle (the unit's D)."""
        return self.unit.D

    @property
    def param_names(self) -> list[str]:
        """The D coordinate names of a particle (the unit's ``param_names``)."""
        return self.unit.param_names

    def check_theta(self, theta) -> None:
        """``ConfigError`` unless θ's last dimension is D."""
        self.unit.check_theta(theta)

    @property
    def has_population(self) -> bool:
        """Whether :meth:`population_potential` is exact (closed form or full data)."""
        return False

    def population_reason(self) -> Optional[str]:
        """Why this task has no exact population potential (one sentence), or None when it
        has one (:attr:`has_population`).  Used in the errors of the dynamics and of
        ``interact.evaluate``."""
        if self.has_population:
            return None
        return f"task {self.name!r} is sample-based (its data law has no closed-form potentials)"

    def population_potential(self, theta: torch.Tensor, weights: torch.Tensor,
                             pair_sum) -> Potential:
        """Exact Ψ, ∇Ψ, R at θ [B, N, D] with weights [B or 1, N].

        ``pair_sum(kernel, unit, x, y, c, grad=True) -> (S, G)`` is the interaction
        backend's kernel sum (supplied by ``meanfield.interact.evaluate``; models never
        import a backend)."""
        raise ConfigError(f"task {self.name!r} has no exact population potential: "
                          f"{self.population_reason()}")

    @property
    def risk_sharp(self) -> Optional[float]:
        """R_# = E[y²] when known in closed form, else None."""
        return None

    def sample_potential(self, theta: torch.Tensor, weights, x: torch.Tensor,
                         y: torch.Tensor) -> Potential:
        """Unbiased batch estimates from (x [B, n, d], y [B, n]), with r_k = ½∂_fℓ(y_k, f(x_k))
        (:func:`loss_terms`; r_k = f(x_k) − y_k for the squared loss):

            Ψ̂(θ_i) = (1/n) Σ_k r_k φ(x_k; θ_i),  ∇Ψ̂ likewise with ∇_θφ,
            R̂ = (1/n) Σ_k ℓ(y_k, f(x_k))  (squared: (y_k − f(x_k))²) with standard error sd/√n.
        """
        theta = as_batched(theta)
        m = as_weights(weights, theta)
        n = x.shape[-2]
        phi = self.features(x, theta)                               # (B, n, N)
        f = (phi @ m.unsqueeze(-1)).squeeze(-1)                     # (B, n)
        r, ell = loss_terms(self.loss, f, y)                        # (B, n), (B, n)
        psi = (r.unsqueeze(-2) @ phi).squeeze(-2) / n               # (B, N)
        grad = self.feature_grad(x, theta, r / n)                   # (B, N, D)
        risk = ell.mean(-1)
        se = ell.std(-1) / math.sqrt(n) if n > 1 else torch.full_like(risk, float("nan"))
        return Potential(psi=psi, grad=grad, risk=risk, risk_se=se)

    def _squared_only(self, what: str) -> None:
        if self.loss != "squared":
            raise ConfigError(f"{what} is the squared loss's decomposition R = R_# + 2∫V dρ + ∬U dρdρ; "
                              f"this task uses the {self.loss} loss, which has none")

    def sample_V(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
        """V̂(θ_i) = −(1/n) Σ_k y_k φ(x_k; θ_i) and its standard error, each [B, N]
        (squared loss only)."""
        self._squared_only("V")
        prod = -y.unsqueeze(-1) * self.unit(x, as_batched(theta))      # (B, n, N)
        return prod.mean(-2), prod.std(-2) / math.sqrt(x.shape[-2])

    def sample_U(self, theta: torch.Tensor, theta2: torch.Tensor, x: torch.Tensor):
        """Û(θ_i, θ'_j) = (1/n) Σ_k φ(x_k; θ_i) φ(x_k; θ'_j), [B, N, M] (x [B, n, d];
        squared loss only)."""
        self._squared_only("U")
        p1 = self.unit(x, as_batched(theta))                         # (B, n, N)
        p2 = self.unit(x, as_batched(theta2))                        # (B, n, M)
        return p1.transpose(-1, -2) @ p2 / x.shape[-2]

    # --- serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-serialisable description: {"name", "unit"} plus each subclass's scalar
        settings; the arrays needed to rebuild the task are in :meth:`arrays`."""
        return {"name": self.name, "unit": self.unit.to_dict()}

    def arrays(self) -> dict:
        """Arrays needed to rebuild the task (saved in particles.npz)."""
        return {}


def _on_generator(generator) -> torch.device:
    """Where ``generator`` draws: random numbers are drawn there and then moved, so that a CPU
    generator drives a CUDA run with the CPU run's numbers (and its state checkpoints alike)."""
    return generator.device if generator is not None else torch.device("cpu")


def _gauss(shape, generator, dtype, device):
    z = torch.randn(*shape, generator=generator, dtype=dtype, device=_on_generator(generator))
    return z if device is None else z.to(device)
