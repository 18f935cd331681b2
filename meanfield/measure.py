"""ParticleMeasure: an empirical measure ρ_N = Σ_i m_i δ_{θ_i}, possibly for B replicas.

positions [N, D] or [B, N, D] (B independent replicas advanced together), weights [N]
(None: uniform m_i = 1/N), layer [N] (a fixed layer coordinate s_i ∈ [0, 1] for ResNets),
param_names [D].
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch

from .errors import ConfigError, check_positive_int


@dataclass(frozen=True)
class ParticleMeasure:
    """ρ_N = Σ_i m_i δ_{θ_i}: positions θ [N, D] or [B, N, D] (B replicas sharing weights,
    layer and names), weights m [N] or None (uniform 1/N), layer s [N] in [0, 1] or None,
    param_names [D] or None.

    Frozen; validated on construction (``ConfigError`` for a non-float or wrongly shaped
    positions tensor, weights that are negative, non-finite or do not sum to 1 within 1e-6,
    or a mis-sized layer / param_names).  Array-likes for weights and layer are converted
    (weights to the positions' dtype, layer to float64).
    """

    positions: torch.Tensor
    weights: Optional[torch.Tensor] = None
    layer: Optional[torch.Tensor] = None
    param_names: Optional[tuple[str, ...]] = field(default=None)

    def __post_init__(self):
        p = self.positions
        if not isinstance(p, torch.Tensor) or p.dim() not in (2, 3):
            raise ConfigError("positions must be a torch.Tensor of shape [N, D] or [B, N, D]")
        if not torch.is_floating_point(p):
            raise ConfigError(f"positions must be floating point, got {p.dtype}")
        N, D = p.shape[-2:]
        for name in ("weights", "layer"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, torch.Tensor):
                try:
                    v = torch.as_tensor(v, dtype=p.dtype if name == "weights" else torch.float64)
                except (TypeError, ValueError, RuntimeError):
                    raise ConfigError(f"{name} must be an array of numbers") from None
                object.__setattr__(self, name, v)
        if N < 1 or D < 1:
            raise ConfigError(f"positions must hold at least one particle of dimension >= 1, got {list(p.shape)}")
        if self.weights is not None:
            w = self.weights
            if w.shape != (N,):
                raise ConfigError(f"weights must have shape [{N}], got {list(w.shape)}")
            if (w < 0).any() or not torch.isfinite(w).all():
                raise ConfigError("weights must be finite and non-negative")
            if abs(float(w.sum()) - 1.0) > 1e-6:
                raise ConfigError(f"weights must sum to 1, got {float(w.sum()):.8g}")
        if self.layer is not None and self.layer.shape != (N,):
            raise ConfigError(f"layer must have shape [{N}], got {list(self.layer.shape)}")
        if self.param_names is not None:
            names = tuple(self.param_names)
            if len(names) != D:
                raise ConfigError(f"param_names has {len(names)} names for D={D}")
            object.__setattr__(self, "param_names", names)

    # ---- shape --------------------------------------------------------------------
    @property
    def N(self) -> int:
        """The number of particles N (``positions.shape[-2]``)."""
        return self.positions.shape[-2]

    @property
    def D(self) -> int:
        """The parameter dimension D of one particle (``positions.shape[-1]``)."""
        return self.positions.shape[-1]

    @property
    def replicas(self) -> int:
        """The number of replicas B (1 for positions [N, D])."""
        return self.positions.shape[0] if self.positions.dim() == 3 else 1

    @property
    def batched(self) -> torch.Tensor:
        """positions as [B, N, D]."""
        return self.positions if self.positions.dim() == 3 else self.positions.unsqueeze(0)

    def masses(self) -> torch.Tensor:
        """m [N] (uniform 1/N when weights is None), in the positions' dtype."""
        if self.weights is None:
            return torch.full((self.N,), 1.0 / self.N, dtype=self.positions.dtype,
                              device=self.positions.device)
        return self.weights.to(self.positions.dtype)

    def to(self, dtype=None, device=None) -> "ParticleMeasure":
        """A copy with positions and weights cast to ``dtype`` and all tensors moved to
        ``device`` (None: unchanged); the layer is moved but keeps its dtype."""
        f = lambda t: None if t is None else t.to(dtype=dtype, device=device)
        return replace(self, positions=f(self.positions), weights=f(self.weights),
                       layer=None if self.layer is None else self.layer.to(device=device))

    def replica(self, r: int) -> "ParticleMeasure":
        """Replica ``r`` as an unbatched measure: positions [N, D], same weights, layer and
        names (replica 0 of an unbatched measure is the measure itself)."""
        return replace(self, positions=self.batched[r])

    # ---- constructors -------------------------------------------------------------
    @classmethod
    def gaussian(cls, N: int, D: int, *, generator: torch.Generator, std=1.0, mean=0.0,
                 replicas: int = 1, dtype=torch.float32, device=None,
                 param_names: Optional[Sequence[str]] = None) -> "ParticleMeasure":
        """θ_i ~ N(mean, diag(std²)) i.i.d.; ``std``/``mean`` scalars or [D] sequences.

        Returns positions [N, D] when replicas == 1, else [replicas, N, D].
        """
        N = check_positive_int("N", N)
        D = check_positive_int("D", D)
        R = check_positive_int("replicas", replicas)
        std_t = torch.as_tensor(std, dtype=torch.float64)
        mean_t = torch.as_tensor(mean, dtype=torch.float64)
        for name, t in (("std", std_t), ("mean", mean_t)):
            if t.dim() > 1 or (t.dim() == 1 and t.shape[0] != D):
                raise ConfigError(f"{name} must be a scalar or have length D={D}")
            if not torch.isfinite(t).all():
                raise ConfigError(f"{name} must be finite")
        if (std_t < 0).any():
            raise ConfigError("std must be >= 0")
        z = torch.randn(R, N, D, generator=generator, dtype=torch.float64)
        pos = (mean_t + std_t * z).to(dtype=dtype, device=device)
        return cls(pos if R > 1 else pos[0], param_names=param_names)
