"""Units φ(x; θ) = a σ(⟨w, x⟩ + b) and their parameter layouts.

A unit is the integrand of the mean-field network f(x; ρ) = ∫ φ(x; θ) ρ(dθ).
θ ∈ R^D is laid out as ``[a, w_0, …, w_{d-1}, b]`` with ``a`` present only when the unit
has an output weight and ``b`` only when it has a bias; ``param_names`` names each
coordinate.  Mei–Montanari–Nguyen (PNAS 2018) use φ = σ(⟨w, x⟩): no output weight (a ≡ 1)
and no bias, i.e. ``Unit(d, act, output_weight=False, bias=False)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, check_positive_int
from .activations import Activation, get_activation


@dataclass(frozen=True)
class Unit:
    """φ(x; θ) = a σ(⟨w, x⟩ + b) with x ∈ R^d.

    Parameters
    ----------
    d : input dimension.
    activation : an :class:`Activation` or its name (see ``models.activations``).
    output_weight : whether θ carries the output weight a (else a ≡ 1).
    bias : whether θ carries the bias b (else b ≡ 0).
    """

    d: int
    activation: Activation
    output_weight: bool = True
    bias: bool = False

    def __init__(self, d: int, activation="relu", output_weight: bool = True, bias: bool = False):
        object.__setattr__(self, "d", check_positive_int("d", d))
        object.__setattr__(self, "activation", get_activation(activation))
        object.__setattr__(self, "output_weight", bool(output_weight))
        object.__setattr__(self, "bias", bool(bias))

    # ---- layout -------------------------------------------------------------------
    @property
    def D(self) -> int:
        """Number of parameters per unit: d + output_weight + bias."""
        return self.d + int(self.output_weight) + int(self.bias)

    @property
    def w_slice(self) -> slice:
        """The slice of θ's last axis holding w: [1, 1 + d) with an output weight, else [0, d)."""
        s = int(self.output_weight)
        return slice(s, s + self.d)

    @property
    def param_names(self) -> list[str]:
        """The D coordinate names in θ's layout: "a" (if output_weight), "w0"…"w{d−1}", "b"
        (if bias)."""
        names = (["a"] if self.output_weight else []) + [f"w{k}" for k in range(self.d)]
        return names + (["b"] if self.bias else [])

    @property
    def homogeneity(self) -> int | None:
        """The degree L with φ(x; rθ) = r^L φ(x; θ) for every r > 0, or None: a positively
        1-homogeneous σ (relu, linear) gives L = 2 with an output weight (a σ(⟨w, x⟩ + b))
        and L = 1 without, bias or not (b scales with w); any other σ: None."""
        if self.activation.name not in ("relu", "linear"):
            return None
        return 2 if self.output_weight else 1

    def split(self, theta: torch.Tensor):
        """(a, w, b) views of θ [..., D]: a [...] (or None), w [..., d], b [...] (or None)."""
        self.check_theta(theta)
        a = theta[..., 0] if self.output_weight else None
        b = theta[..., -1] if self.bias else None
        return a, theta[..., self.w_slice], b

    def check_theta(self, theta) -> None:
        """``ConfigError`` unless θ's last dimension is D."""
        if theta.shape[-1] != self.D:
            raise ConfigError(
                f"parameters have last dimension {theta.shape[-1]} but the unit "
                f"({', '.join(self.param_names[:3])}…) has D={self.D}")

    def check_x(self, x) -> None:
        """``ConfigError`` unless x's last dimension is d."""
        if x.shape[-1] != self.d:
            raise ConfigError(f"inputs have dimension {x.shape[-1]} but the unit expects d={self.d}")

    # ---- evaluation ------------------------------------------------------------------
    def preactivation(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """z = ⟨w, x⟩ + b for x [B, n, d], θ [B, N, D] → [B, n, N]."""
        self.check_x(x)
        _, w, b = self.split(theta)
        z = x @ w.transpose(-1, -2)                       # (B, n, N)
        if b is not None:
            z = z + b.unsqueeze(-2)
        return z

    def __call__(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """φ(x_k; θ_i) for x [B, n, d], θ [B, N, D] → [B, n, N]."""
        a, _, _ = self.split(theta)
        s = self.activation(self.preactivation(x, theta))
        return s if a is None else s * a.unsqueeze(-2)

    def network(self, x: torch.Tensor, theta: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """f(x; ρ_N) = Σ_i m_i φ(x; θ_i) for x [B, n, d], θ [B, N, D], m [B or 1, N] → [B, n]."""
        phi = self(x, theta)                               # (B, n, N)
        return (phi @ weights.to(phi.dtype).unsqueeze(-1)).squeeze(-1)

    def weighted_grad(self, x: torch.Tensor, theta: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """Σ_k coef_k ∇_θ φ(x_k; θ_i) for x [B, n, d], θ [B, N, D], coef [B, n] → [B, N, D].

        ∇_a φ = σ(z), ∇_w φ = a σ'(z) x, ∇_b φ = a σ'(z), z = ⟨w, x⟩ + b.
        """
        a, _, _ = self.split(theta)
        z = self.preactivation(x, theta)                   # (B, n, N)
        ds = self.activation.derivative(z)
        if a is not None:
            ds = ds * a.unsqueeze(-2)
        cds = ds * coef.unsqueeze(-1)                      # (B, n, N)
        parts = []
        if self.output_weight:
            parts.append((self.activation(z).transpose(-1, -2) @ coef.unsqueeze(-1)))  # (B, N, 1)
        parts.append(cds.transpose(-1, -2) @ x)            # (B, N, d)
        if self.bias:
            parts.append(cds.sum(-2).unsqueeze(-1))           # (B, N, 1)
        return torch.cat(parts, dim=-1)

    def to_dict(self) -> dict:
        """{"d", "activation": σ's dict (:meth:`Activation.to_dict`), "output_weight", "bias"},
        JSON-serialisable, for config.json and task descriptions."""
        return {"d": self.d, "activation": self.activation.to_dict(),
                "output_weight": self.output_weight, "bias": self.bias}
