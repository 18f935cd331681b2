"""The residual unit of the measure-valued ResNet and its default (dense torch) sums.

φ(x; θ) = u σ(⟨w, x⟩ + b), θ = (u, w, b) ∈ R^D × R^D × R (layout [u_0…u_{D−1}, w_0…w_{D−1}, b]):
the activations σ (every ``models.activations`` name, plus cos and sin), :class:`ResidualUnit`
with its four unit-by-data sums, and :class:`DenseSums`, the default ``sums`` of the model
(the interaction backends, ``meanfield.interact.resnet``, implement the same signatures).
The model itself is ``models.resnet``, which re-exports the public names of this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, check_positive_int
from .activations import ACTIVATIONS, get_activation

RESIDUAL_ACTIVATIONS = tuple(sorted(set(ACTIVATIONS) | {"cos", "sin"}))


# ---- activations ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Trig:
    """σ = cos or sin (random-Fourier-feature residuals), with σ'."""

    name: str

    def __call__(self, z):
        return torch.cos(z) if self.name == "cos" else torch.sin(z)

    def derivative(self, z):
        return -torch.sin(z) if self.name == "cos" else torch.cos(z)

    def to_dict(self):
        return {"name": self.name}


def residual_activation(name):
    """σ by name: every ``models.activations`` name, plus ``cos`` and ``sin``."""
    if isinstance(name, _Trig) or hasattr(name, "derivative"):
        return name
    if name in ("cos", "sin"):
        return _Trig(name)
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown residual activation {name!r}; choose one of {list(RESIDUAL_ACTIVATIONS)}")
    return get_activation(name)


# ---- the residual unit -----------------------------------------------------------------
class ResidualUnit:
    """φ(x; θ) = u σ(⟨w, x⟩ + b) on the hidden space R^D, θ = (u, w, b) ∈ R^P, P = 2D + bias.

    The four unit-by-data sums, dense torch (the default ``sums``; the interaction
    backends implement the same signatures).  x [B, n, D] data states, θ [B, M, P] units,
    c [B or 1, M] unit masses, p [B, n, D] adjoints, a [B or 1, n] data weights:

        field      G_k = Σ_j c_j φ(x_k; θ_j)                         [B, n, D]
        field_vjp  Σ_j c_j (D_xφ(x_k; θ_j))ᵀ p_k
                   = Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j                 [B, n, D]
        param_grad Σ_k a_k ∇_θ ⟨p_k, φ(x_k; θ_j)⟩
                   = Σ_k a_k (σ(z_kj) p_k, σ'(z_kj)⟨u_j,p_k⟩ x_k, σ'(z_kj)⟨u_j,p_k⟩)   [B, M, P]
        value      Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩                        [B, M]

    with z_kj = ⟨w_j, x_k⟩ + b_j.
    """

    def __init__(self, D: int, activation="tanh", bias: bool = True):
        self.D = check_positive_int("hidden dimension D", D)
        self.activation = residual_activation(activation)
        self.bias = bool(bias)

    @property
    def P(self) -> int:
        """Parameters per unit: P = 2D + 1 with a bias, 2D without."""
        return 2 * self.D + int(self.bias)

    @property
    def param_names(self) -> list[str]:
        """The P coordinate names in θ's layout: u0…u{D−1}, w0…w{D−1}, then b if biased."""
        names = [f"u{i}" for i in range(self.D)] + [f"w{i}" for i in range(self.D)]
        return names + (["b"] if self.bias else [])

    def split(self, theta: torch.Tensor):
        """(u [..., D], w [..., D], b [...] or None) views of θ [..., P]."""
        if theta.shape[-1] != self.P:
            raise ConfigError(f"ResNet particles have dimension {theta.shape[-1]} but units "
                              f"u σ(⟨w, x⟩ + b) in hidden dimension D={self.D} need P={self.P}")
        D = self.D
        return theta[..., :D], theta[..., D:2 * D], (theta[..., 2 * D] if self.bias else None)

    def preactivation(self, x, theta):
        """z_kj = ⟨w_j, x_k⟩ + b_j for x [B, n, D], θ [B, M, P] → [B, n, M]."""
        _, w, b = self.split(theta)
        z = x @ w.transpose(-1, -2)                                 # (B, n, M)
        return z if b is None else z + b.unsqueeze(-2)

    def field(self, x, theta, c):
        """G_k = Σ_j c_j u_j σ(z_kj) for x [B, n, D], θ [B, M, P], c [B|1, M] → [B, n, D]."""
        u, _, _ = self.split(theta)
        s = self.activation(self.preactivation(x, theta))           # (B, n, M)
        return (s * c.unsqueeze(-2)) @ u                            # (B, n, D)

    def field_vjp(self, x, theta, c, p):
        """Σ_j c_j (D_xφ(x_k; θ_j))ᵀ p_k = Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j for p [B, n, D]
        → [B, n, D] (the adjoint step's vector–Jacobian product)."""
        u, w, _ = self.split(theta)
        ds = self.activation.derivative(self.preactivation(x, theta))   # (B, n, M)
        q = p @ u.transpose(-1, -2)                                 # (B, n, M)  ⟨u_j, p_k⟩
        return (ds * q * c.unsqueeze(-2)) @ w                       # (B, n, D)

    def param_grad(self, x, theta, p, a):
        """Σ_k a_k ∇_θ⟨p_k, φ(x_k; θ_j)⟩ = Σ_k a_k (σ(z_kj) p_k, σ'(z_kj)⟨u_j, p_k⟩ x_k,
        σ'(z_kj)⟨u_j, p_k⟩) for a [B|1, n] → [B, M, P] (the b entry only with a bias)."""
        u, _, _ = self.split(theta)
        z = self.preactivation(x, theta)                            # (B, n, M)
        s, ds = self.activation(z), self.activation.derivative(z)
        q = p @ u.transpose(-1, -2)                                 # (B, n, M)
        aa = a.unsqueeze(-1)                                        # (B|1, n, 1)
        gu = (s * aa).transpose(-1, -2) @ p                         # (B, M, D)
        r = ds * q * aa                                             # (B, n, M)
        gw = r.transpose(-1, -2) @ x                                # (B, M, D)
        parts = [gu, gw] + ([r.sum(-2).unsqueeze(-1)] if self.bias else [])
        return torch.cat(parts, dim=-1)                             # (B, M, P)

    def backward(self, x, theta, c, p, a):
        """(field_vjp, param_grad) in one pass (they share z, σ'(z) and ⟨u_j, p_k⟩)."""
        u, w, _ = self.split(theta)
        z = self.preactivation(x, theta)                            # (B, n, M)
        s, ds = self.activation(z), self.activation.derivative(z)
        q = p @ u.transpose(-1, -2)                                 # (B, n, M)
        dq = ds * q                                                 # (B, n, M)
        vjp = (dq * c.unsqueeze(-2)) @ w                            # (B, n, D)
        aa = a.unsqueeze(-1)                                        # (B|1, n, 1)
        gu = (s * aa).transpose(-1, -2) @ p                         # (B, M, D)
        r = dq * aa                                                 # (B, n, M)
        gw = r.transpose(-1, -2) @ x                                # (B, M, D)
        parts = [gu, gw] + ([r.sum(-2).unsqueeze(-1)] if self.bias else [])
        return vjp, torch.cat(parts, dim=-1)

    def field_saving(self, x, theta, c):
        """(G, σ(z), σ'(z) or None): :meth:`field` [B, n, D] and the [B, n, M] tensors that
        :meth:`backward_saved` needs, so that the backward pass recomputes neither z nor σ
        (σ' is None for tanh and sigmoid: it is recomputed from σ there).  c is folded into
        u ([M, D], not [n, M])."""
        if x.dim() == 3 and x.shape[0] == 1 and theta.dim() == 3 and theta.shape[0] == 1:
            G, s, ds = self.field_saving(x[0], theta[0], c.reshape(-1))   # one replica: 2-D mm
            return G[None], s[None], None if ds is None else ds[None]
        u, w, b = self.split(theta)
        if b is not None and x.dim() == 2:                          # z = b + x wᵀ in one pass
            z = torch.addmm(b, x, w.T)                              # (n, M)
        elif b is not None and x.dim() == 3 and w.dim() == 3:
            z = torch.baddbmm(b.unsqueeze(-2), x, w.transpose(-1, -2))   # (B, n, M)
        else:
            z = self.preactivation(x, theta)                        # (B, n, M)
        s = self.activation(z)
        ds = None if getattr(self.activation, "name", None) in ("tanh", "sigmoid") \
            else self.activation.derivative(z)
        return s @ (u * c.unsqueeze(-1)), s, ds                     # (B, n, D)

    def backward_saved(self, x, theta, c, p, a, s, ds):
        """:meth:`backward` from :meth:`field_saving`'s σ(z), σ'(z): four [n, M]×[M|n, D]
        matmuls and a few in-place elementwise passes over [n, M] (c folded into w, a into
        p and x)."""
        if x.dim() == 3 and x.shape[0] == 1 and theta.dim() == 3 and theta.shape[0] == 1 \
                and p.shape[0] == 1:                                # one replica: 2-D mm
            vjp, g = self.backward_saved(x[0], theta[0], c.reshape(-1), p[0], a.reshape(-1), s[0],
                                         None if ds is None else ds[0])
            return vjp[None], g[None]
        u, w, _ = self.split(theta)
        dq = p @ u.transpose(-1, -2)                                # (B, n, M) ⟨u_j, p_k⟩
        if ds is None:                                              # σ' from σ, one fused pass
            back = torch.ops.aten.tanh_backward if self.activation.name == "tanh" \
                else torch.ops.aten.sigmoid_backward
            dq = back(dq, s)                                        # dq (1 − s²) / dq s (1 − s)
        else:
            dq.mul_(ds)
        vjp = dq @ (w * c.unsqueeze(-1))                            # (B, n, D)
        aa = a.unsqueeze(-1)                                        # (B|1, n, 1)
        gu = s.transpose(-1, -2) @ (p * aa)                         # (B, M, D)
        gw = dq.transpose(-1, -2) @ (x * aa)                        # (B, M, D)
        parts = [gu, gw] + ([(a.unsqueeze(-2) @ dq).transpose(-1, -2)] if self.bias else [])
        return vjp, torch.cat(parts, dim=-1)                        # (B, n, D), (B, M, P)

    def value(self, x, theta, p, a):
        """Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩ = Σ_k a_k σ(z_kj) ⟨u_j, p_k⟩ → [B, M] (with a_k = 1/n
        and p the adjoint: the first variation δL/δμ at the units)."""
        u, _, _ = self.split(theta)
        s = self.activation(self.preactivation(x, theta))           # (B, n, M)
        q = p @ u.transpose(-1, -2)                                 # (B, n, M)
        return (s * q * a.unsqueeze(-1)).sum(-2)                    # (B, M)

    def to_dict(self) -> dict:
        """{"D", "activation": σ's dict, "bias"}: JSON-serialisable, for config.json."""
        return {"D": self.D, "activation": self.activation.to_dict(), "bias": self.bias}


class DenseSums:
    """The default unit-by-data sums: the dense torch formulas of :class:`ResidualUnit`."""

    name = "dense"

    def field(self, unit, x, theta, c):
        """``unit.field``: Σ_j c_j φ(x_k; θ_j) [B, n, D]."""
        return unit.field(x, theta, c)

    def field_vjp(self, unit, x, theta, c, p):
        """``unit.field_vjp``: Σ_j c_j σ'(z_kj) ⟨u_j, p_k⟩ w_j [B, n, D]."""
        return unit.field_vjp(x, theta, c, p)

    def param_grad(self, unit, x, theta, p, a):
        """``unit.param_grad``: Σ_k a_k ∇_θ⟨p_k, φ(x_k; θ_j)⟩ [B, M, P]."""
        return unit.param_grad(x, theta, p, a)

    def value(self, unit, x, theta, p, a):
        """``unit.value``: Σ_k a_k ⟨p_k, φ(x_k; θ_j)⟩ [B, M]."""
        return unit.value(x, theta, p, a)

    def backward(self, unit, x, theta, c, p, a):
        """``unit.backward``: (field_vjp [B, n, D], param_grad [B, M, P]) in one pass."""
        return unit.backward(x, theta, c, p, a)


def _backward(sums, unit, x, theta, c, p, a):
    """(field_vjp, param_grad): fused when the backend offers ``backward``."""
    f = getattr(sums, "backward", None)
    if f is not None:
        return f(unit, x, theta, c, p, a)
    return sums.field_vjp(unit, x, theta, c, p), sums.param_grad(unit, x, theta, p, a)


_DENSE = DenseSums()


__all__ = ["RESIDUAL_ACTIVATIONS", "DenseSums", "ResidualUnit", "residual_activation"]
