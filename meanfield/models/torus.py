"""The MMD objective on the flat 2-torus (Chizat 2022, mean-field Langevin dynamics).

Particles θ ∈ T² = [0, L)² (L = 2π), a target measure ν = Σ_t ν_t δ_{y_t}, and the
translation-invariant, positive semi-definite kernel

    k(x, y) = ∏_{c=1,2} g(x_c − y_c),    g(u) = 1 + 2 Σ_{k=1}^{K} cos(k ω u)/(1 + k),  ω = 2π/L

(K = 5 in Chizat's "Mean-field Langevin dynamics: exponential convergence and annealing",
TMLR 2022; its notebook ``MFL.ipynb`` defines the same product of modified Dirichlet kernels,
checked).  The risk is the squared MMD between ρ and ν in the RKHS H of k, written in
docs/design.md §1's form:

    R(ρ) = ‖∫k(·, θ) dρ − ∫k(·, y) dν‖²_H = R_# + 2 ∫V dρ + ∬U dρ dρ,
    U(θ, θ') = k(θ, θ'),   V(θ) = −Σ_t ν_t k(θ, y_t),   R_# = Σ_{t,s} ν_t ν_s k(y_t, y_s),
    Ψ(θ; ρ) = V(θ) + ∫ k(θ, θ') ρ(dθ'),   ∇_θ k(θ, y) = (g'(θ_1 − y_1) g(θ_2 − y_2), g(θ_1 − y_1) g'(θ_2 − y_2)),
    g'(u) = −2ω Σ_k k sin(k ω u)/(1 + k).

k(x, x) = g(0)² = (1 + 2 Σ_k 1/(1 + k))² ≈ 15.2 for K = 5.  The interaction backends sum
dot-product kernels a a' κ(⟨w, w'⟩, …); a translation-invariant kernel is not one of them, so
the task sums its own pairs, in one of two exact ways (``method``):

* ``"modes"`` (default): through the kernel's (2K + 1)² Fourier modes a_{k₁} a_{k₂} (a_0 = 1,
  a_{±k} = 1/(1 + k)); with ρ̂_k = Σ_j m_j e^{−iω k·θ_j},

      Ψ(x) = Σ_k a_k e^{iω k·x} (ρ̂_k − ν̂_k),  ∇Ψ(x) = Σ_k a_k iωk e^{iω k·x} (ρ̂_k − ν̂_k),
      R = Σ_k a_k |ρ̂_k − ν̂_k|²,

  O(B·(N + n_targets)·(2K + 1)²) work as (2K + 1)-square matrix products (6.8 ms on the 4096
  cells of a 64² grid, where the direct sums took 12.3 s: measured);
* ``"direct"``: pair sums of the cosine products, O(B·N·(N + n_targets)), in row blocks of
  at most ``block`` particles so that memory stays O(block·N).

The tests check one against the other and both against autograd.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_finite_float, check_positive_int
from .tasks import Potential, Task


class TorusMMD(Task):
    """MMD² to ``targets`` [n, 2] (weights ``target_weights`` [n], default 1/n) on the
    torus [0, ``period``)² with the kernel of the module docstring (``modes`` = K).

    θ [B, N, 2]; weights [B or 1, N].  ``population_potential`` returns Ψ [B, N],
    ∇Ψ [B, N, 2], R [B] and V [B, N] exactly.
    """

    name = "torus-mmd"

    def __init__(self, targets, target_weights=None, *, modes: int = 5, period: float = 2 * math.pi,
                 method: str = "modes", block: int = 2048):
        t = torch.as_tensor(targets, dtype=torch.float64)
        if t.dim() != 2 or t.shape[1] != 2 or len(t) == 0 or not torch.isfinite(t).all():
            raise ConfigError(f"targets must be a finite [n, 2] array with n >= 1, got shape {list(t.shape)}")
        if target_weights is None:
            tw = torch.full((len(t),), 1.0 / len(t), dtype=torch.float64)
        else:
            tw = torch.as_tensor(target_weights, dtype=torch.float64)
            if tw.shape != (len(t),) or not torch.isfinite(tw).all() or (tw < 0).any():
                raise ConfigError(f"target_weights must be finite, >= 0 and of shape [{len(t)}]")
        self.targets, self.target_weights = t, tw
        self.modes = check_positive_int("modes", modes)
        self.period = check_finite_float("period", period, positive=True)
        self.block = check_positive_int("block", block)
        if method not in ("modes", "direct"):
            raise ConfigError(f"method must be 'modes' or 'direct', got {method!r}")
        self.method = method
        self.unit = None
        K = self.kernel(t, t)                                               # (n, n)
        self._risk_sharp = float(tw @ K @ tw)
        k = torch.arange(-self.modes, self.modes + 1, dtype=torch.float64)
        a = 1.0 / (1.0 + k.abs())
        self._k = k                                                         # (2K+1,)
        self._a = a[:, None] * a[None, :]                                   # (2K+1, 2K+1)
        self._nu = self._transform(t[None], tw[None])[0]                    # (2K+1, 2K+1) complex

    @classmethod
    def random(cls, n_targets: int = 10, *, generator: torch.Generator, **kw) -> "TorusMMD":
        """``n_targets`` targets uniform on the torus (Chizat 2022: 10), equal weights."""
        n = check_positive_int("n_targets", n_targets)
        period = kw.get("period", 2 * math.pi)
        return cls(torch.rand(n, 2, generator=generator, dtype=torch.float64) * period, **kw)

    # ---- the kernel -------------------------------------------------------------------
    def _g(self, u):
        """g(u) and g'(u) elementwise (u any shape)."""
        w = 2 * math.pi / self.period
        k = torch.arange(1, self.modes + 1, dtype=u.dtype, device=u.device)
        ku = w * u.unsqueeze(-1) * k                                       # (..., K)
        c = 1.0 / (1.0 + k)
        g = 1 + 2 * (torch.cos(ku) * c).sum(-1)
        dg = -2 * w * (torch.sin(ku) * (k * c)).sum(-1)
        return g, dg

    def kernel(self, x, y):
        """k(x_i, y_j) [..., n, m] for x [..., n, 2], y [..., m, 2]."""
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        d = x.unsqueeze(-2) - y.unsqueeze(-3)                               # (..., n, m, 2)
        g, _ = self._g(d)
        return g[..., 0] * g[..., 1]

    def kernel_sum(self, x, y, c):
        """S_i = Σ_j c_j k(x_i, y_j) [B, n] and G_i = Σ_j c_j ∇_x k(x_i, y_j) [B, n, 2]
        for x [B, n, 2], y [B or 1, m, 2], c [B or 1, m]; rows in blocks of ``block``."""
        S, G = [], []
        for i0 in range(0, x.shape[-2], self.block):
            xb = x[..., i0:i0 + self.block, :]
            d = xb.unsqueeze(-2) - y.unsqueeze(-3)                          # (B, b, m, 2)
            g, dg = self._g(d)
            k = g[..., 0] * g[..., 1]                                       # (B, b, m)
            grad = torch.stack([dg[..., 0] * g[..., 1], g[..., 0] * dg[..., 1]], -1)
            cc = c.unsqueeze(-2)                                            # (B, 1, m)
            S.append((k * cc).sum(-1))
            G.append((grad * cc.unsqueeze(-1)).sum(-2))
        return torch.cat(S, -1), torch.cat(G, -2)

    def _phases(self, theta):
        """(e₁, e₂): e^{iω k θ_c} for k = −K..K, each [..., N, 2K+1] complex; the mode
        (k₁, k₂) of a point is e₁[k₁] e₂[k₂] (the kernel factorises over coordinates)."""
        w = 2 * math.pi / self.period
        k = self._k.to(theta.dtype)
        one = torch.ones(theta.shape[:-1] + (len(k),), dtype=theta.dtype, device=theta.device)
        return (torch.polar(one, w * theta[..., :1] * k), torch.polar(one, w * theta[..., 1:2] * k))

    def _transform(self, theta, weights):
        """ρ̂_{k₁k₂} = Σ_j m_j e^{−iω k·θ_j}: [B, 2K+1, 2K+1] complex."""
        e1, e2 = self._phases(theta)
        m = weights.to(e1.real.dtype).to(e1.dtype)
        return torch.einsum("bn,bnk,bnl->bkl", m, e1.conj(), e2.conj())

    def _modes_potential(self, theta, weights):
        """Ψ, ∇Ψ, R, V by the mode sums (module docstring): Ψ = Re e₁ A∘(ρ̂ − ν̂) e₂ per point."""
        e1, e2 = self._phases(theta)                                        # (B, N, 2K+1) each
        a = self._a.to(e1.real.dtype)
        nu = self._nu.to(e1.dtype)
        Dm = (a * (self._transform(theta, weights) - nu)).to(e1.dtype)      # (B, 2K+1, 2K+1)
        left = e1 @ Dm                                                      # (B, N, 2K+1)
        iwk = (1j * (2 * math.pi / self.period)) * self._k.to(e1.real.dtype)
        psi = (left * e2).sum(-1).real
        grad = torch.stack([(((e1 * iwk) @ Dm) * e2).sum(-1).real,
                            (left * (e2 * iwk)).sum(-1).real], -1)           # (B, N, 2)
        V = -((e1 @ (a * nu).to(e1.dtype)) * e2).sum(-1).real
        risk = self._risk_sharp + ((psi + V) * weights).sum(-1)
        return Potential(psi=psi.to(theta.dtype), grad=grad.to(theta.dtype),
                         risk=risk.to(theta.dtype), V=V.to(theta.dtype))

    # ---- Task interface -----------------------------------------------------------------
    @property
    def D(self) -> int:
        """2: a particle is a point of the 2-torus."""
        return 2

    @property
    def param_names(self):
        """["x0", "x1"], the two torus coordinates."""
        return ["x0", "x1"]

    def check_theta(self, theta):
        """``ConfigError`` unless θ's last dimension is 2."""
        if theta.shape[-1] != 2:
            raise ConfigError(f"torus particles have last dimension {theta.shape[-1]}, expected 2")

    @property
    def has_population(self) -> bool:
        return True

    @property
    def risk_sharp(self) -> float:
        """R_# = ∬ k dν dν."""
        return self._risk_sharp

    def population_potential(self, theta, weights, pair_sum=None):
        """V_i = −Σ_t ν_t k(θ_i, y_t), Ψ_i = V_i + Σ_j m_j k(θ_i, θ_j), ∇Ψ likewise,
        R = R_# + Σ_i m_i (Ψ_i + V_i) (``pair_sum`` is unused: see the module docstring)."""
        if self.method == "modes":
            return self._modes_potential(theta, weights)
        y = self.targets.to(dtype=theta.dtype, device=theta.device)[None]
        c = self.target_weights.to(dtype=theta.dtype, device=theta.device)[None]
        T, GT = self.kernel_sum(theta, y, c)
        W, GW = self.kernel_sum(theta, theta, weights)
        V = -T
        psi = V + W
        risk = self._risk_sharp + ((psi + V) * weights).sum(-1)
        return Potential(psi=psi, grad=GW - GT, risk=risk, V=V)

    def sample(self, n, **kw):
        raise ConfigError("the torus MMD task has no data to sample (its risk is exact)")

    def to_dict(self):
        """{"name", "n_targets", "modes", "period", "method"} (JSON-serialisable); targets and
        their weights are in :meth:`arrays`."""
        return {"name": self.name, "n_targets": len(self.targets), "modes": self.modes,
                "period": self.period, "method": self.method}

    def arrays(self):
        return {"targets": self.targets.numpy(), "target_weights": self.target_weights.numpy()}
