"""The measure-valued ResNet (DESIGN.md §1 "ResNets"; Barboni–Peyré–Vialard 2022, 2024).

A mean-field ResNet is a measure μ on [0, 1] × Θ with uniform first marginal,
μ = ds ⊗ μ_s, acting on hidden states x ∈ R^D:

    dx/ds = ∫ φ(x; θ) μ_s(dθ),   x(0) = A x_in,   output B x(1),   L(μ) = E[ℓ(B x(1), y)],
    φ(x; θ) = u σ(⟨w, x⟩ + b),   θ = (u, w, b) ∈ R^D × R^D × R   (layout [u_0…u_{D−1}, w_0…w_{D−1}, b]).

Particles (s_j, θ_j, m_j) with a *fixed* layer coordinate s_j ∈ [0, 1] discretise μ.  The
layers are the distinct values of s (or, when ``depth = L`` is given, the cells
[l/L, (l+1)/L) of the uniform grid, each of which must hold a particle), visited in order
of s.  Layer l moves the states by the increment

    G_l(x) = Σ_{j ∈ layer l} m_j φ(x; θ_j),

explicit Euler x_{l+1} = x_l + G_l(x_l) by default, or midpoint / RK4 sub-steps of G_l
(the measure is piecewise constant in s, so a cell's flow is autonomous).  For L layers of
M units with m_j = 1/(LM) Euler is exactly the discrete ResNet
x_{l+1} = x_l + (1/(LM)) Σ_j φ(x_l; θ_{l,j}) (:func:`to_module`).

Losses (no ½, as the two-layer risk): squared ℓ(z, y) = |z − y|², cross-entropy
ℓ(z, y) = −log softmax(z)_y; L = (1/n) Σ_k ℓ(B x_k(1), y_k) on a dataset.

Adjoint and first variation (Euler, per sample k; the discrete form of dp/ds = −(∫ D_xφ μ_s)ᵀ p):

    p_L = Bᵀ ∇ℓ(B x_L, y),     p_l = p_{l+1} + (D_x G_l(x_l))ᵀ p_{l+1},
    (δL/δμ)(s, θ) = (1/n) Σ_k ⟨p_{l+1,k}, φ(x_{l,k}; θ)⟩      (s in layer l),

and ∇_θ(δL/δμ)(s_j, θ_j) = (1/m_j) ∂L/∂θ_j: the conditional-OT velocity −∇_θ δL/δμ is L·M
times minus the ordinary gradient of the discrete ResNet's loss.

The unit-by-data sums (Σ over units for G and its vector–Jacobian product, Σ over data for
the θ-gradient) are delegated to a ``sums`` object (``meanfield.interact.resnet``: dense
torch or KeOps); models never import a backend, the dense torch formulas below are the default.

Shapes: θ [B, N, P] (B replicas, P = 2D + bias), weights m [B or 1, N], layer [N],
x_in [n, d_in] or [B, n, d_in], y [n, d_out] (squared) or [n] integer labels (cross-entropy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError, check_positive_int
from ..measure import ParticleMeasure
from .activations import ACTIVATIONS, get_activation
from .tasks import as_batched, as_weights

LOSSES = ("squared", "cross_entropy")
SCHEMES = ("euler", "midpoint", "rk4")
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


# ---- layers ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Layers:
    """The layer structure of N particles: layer l ∈ {0..L−1} of particle j is ``index[j]``.

    s [L] (float64) the layer coordinates in increasing order; ``order`` [N] the particles
    sorted by layer (stable); ``bounds[l] = (start, stop)`` the slice of ``order`` holding
    layer l; ``contiguous``: the particles are already sorted (slices are views).
    """

    s: torch.Tensor
    index: torch.Tensor
    order: torch.Tensor
    bounds: tuple
    contiguous: bool

    @property
    def L(self) -> int:
        """The number of layers."""
        return len(self.bounds)

    @property
    def widths(self) -> list[int]:
        """The number of particles M_l in each layer l = 0..L−1."""
        return [b - a for a, b in self.bounds]

    @classmethod
    def from_coordinates(cls, layer, N: int, *, depth: Optional[int] = None) -> "Layers":
        """Layers from coordinates s [N] ∈ [0, 1].

        ``depth = L``: particle j belongs to cell ⌊s_j L⌋ (s = 1 to the last) of the uniform
        grid s_l = l/L, and every cell must hold a particle; ``None``: one layer per distinct s.
        """
        if layer is None:
            raise ConfigError("a ResNet needs a layer coordinate s_j ∈ [0, 1] for every particle, got none")
        s = torch.as_tensor(layer).detach().to(device="cpu", dtype=torch.float64)
        if s.shape != (N,):
            raise ConfigError(f"layer must have shape [{N}] (one coordinate per particle), got {list(s.shape)}")
        bad = ~(torch.isfinite(s) & (s >= 0) & (s <= 1))
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ConfigError(f"layer coordinate s[{j}] = {float(s[j])!r} is outside [0, 1]")
        if depth is None:
            vals, index = torch.unique(s, sorted=True, return_inverse=True)
        else:
            L = check_positive_int("depth", depth)
            sl = s * L
            near = torch.round(sl)
            cell = torch.where((sl - near).abs() < 1e-9, near, torch.floor(sl))
            index = cell.clamp(0, L - 1).long()
            counts = torch.bincount(index, minlength=L)
            if (counts == 0).any():
                l = int((counts == 0).nonzero()[0])
                raise ConfigError(f"layer {l} of the depth-{L} grid (s in [{l / L:.6g}, {(l + 1) / L:.6g})) "
                                  f"holds no particles; every layer needs at least one unit")
            vals = torch.arange(L, dtype=torch.float64) / L
        order = torch.sort(index, stable=True).indices
        counts = torch.bincount(index, minlength=len(vals)).tolist()
        starts = [0]
        for c in counts:
            starts.append(starts[-1] + c)
        bounds = tuple((starts[l], starts[l + 1]) for l in range(len(vals)))
        contiguous = bool(torch.equal(order, torch.arange(N)))
        return cls(vals, index, order, bounds, contiguous)

    def members(self, l: int) -> torch.Tensor:
        """Particle indices of layer l (sorted), [M_l]."""
        a, b = self.bounds[l]
        return self.order[a:b]

    def take(self, t: torch.Tensor, l: int) -> torch.Tensor:
        """Layer l's entries of t [..., N] or [..., N, P] along the particle axis ``-2`` (θ)
        or ``-1`` (masses, when t is 2-D [B, N])."""
        a, b = self.bounds[l]
        axis = -2 if t.dim() == 3 else -1
        if self.contiguous:
            return t[..., a:b, :] if axis == -2 else t[..., a:b]
        idx = self.order[a:b].to(t.device)
        return t.index_select(t.dim() + axis, idx)

    def put(self, out: torch.Tensor, l: int, values: torch.Tensor) -> None:
        """out[..., members(l), ...] = values (θ-shaped [B, N, P] or [B, N])."""
        a, b = self.bounds[l]
        if self.contiguous:
            out[:, a:b] = values
            return
        idx = self.order[a:b].to(out.device)
        out[:, idx] = values

    def grid(self) -> Optional[tuple[int, int]]:
        """(L, M) when every layer has the same width M, else None."""
        w = self.widths
        return (self.L, w[0]) if len(set(w)) == 1 else None


# ---- results -----------------------------------------------------------------------------
@dataclass
class ResNetPotential:
    """What the conditional-OT flow needs at θ: the loss L [B], the θ-gradient of the first
    variation at every particle ``grad`` [B, N, P] (= 2∇Ψ in DESIGN's Ψ = ½ δL/δμ), the
    first variation itself ``value`` [B, N] when asked, and the outputs ``out`` [B, n, d_out]."""

    loss: torch.Tensor
    grad: torch.Tensor
    out: torch.Tensor
    value: Optional[torch.Tensor] = None


# ---- the model ------------------------------------------------------------------------
class ResNet:
    """The measure-valued ResNet (module docstring): WHAT the conditional-OT flow minimises.

    Parameters
    ----------
    A : embedding [D, d_in] (x(0) = A x_in); fixed.
    B : read-out [d_out, D] (output B x(1)); fixed.
    activation : σ of the residual units (``RESIDUAL_ACTIVATIONS``).
    bias : whether units carry b.
    loss : "squared" (|z − y|², no ½) or "cross_entropy" (d_out classes).
    scheme : "euler" (the discrete ResNet; explicit adjoint), "midpoint" or "rk4"
        (gradients by autograd through the scheme).
    substeps : sub-steps per layer (G_l/substeps each).
    depth : None (one layer per distinct s) or L (the uniform grid l/L, no empty cell).
    """

    def __init__(self, A, B, *, activation="tanh", bias: bool = True, loss: str = "squared",
                 scheme: str = "euler", substeps: int = 1, depth: Optional[int] = None):
        A = self._matrix("A", A)
        B = self._matrix("B", B)
        if B.shape[1] != A.shape[0]:
            raise ConfigError(f"embedding A [{A.shape[0]}, {A.shape[1]}] maps into hidden dimension "
                              f"{A.shape[0]} but read-out B [{B.shape[0]}, {B.shape[1]}] reads "
                              f"dimension {B.shape[1]}: need B.shape[1] == A.shape[0]")
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {scheme!r}; choose one of {list(SCHEMES)}")
        if loss == "cross_entropy" and B.shape[0] < 2:
            raise ConfigError(f"cross-entropy needs at least 2 classes (rows of B), got {B.shape[0]}")
        self.A, self.B = A, B
        self.unit = ResidualUnit(A.shape[0], activation, bias)
        self.loss_name = loss
        self.scheme = scheme
        self.substeps = check_positive_int("substeps", substeps)
        self.depth = None if depth is None else check_positive_int("depth", depth)

    @staticmethod
    def _matrix(name, M):
        try:
            M = torch.as_tensor(M, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"{name} must be a matrix of numbers") from None
        if M.dim() != 2 or M.shape[0] < 1 or M.shape[1] < 1:
            raise ConfigError(f"{name} must be a 2-D matrix, got shape {list(M.shape)}")
        if not torch.isfinite(M).all():
            raise ConfigError(f"{name} has non-finite entries")
        return M.detach().cpu()

    # ---- layout ----------------------------------------------------------------------
    @property
    def D(self) -> int:
        """Hidden dimension."""
        return self.unit.D

    @property
    def P(self) -> int:
        """Parameters per particle, 2D + bias."""
        return self.unit.P

    @property
    def d_in(self) -> int:
        """Input dimension (columns of the embedding A)."""
        return self.A.shape[1]

    @property
    def d_out(self) -> int:
        """Output dimension, or number of classes for cross-entropy (rows of the read-out B)."""
        return self.B.shape[0]

    @property
    def param_names(self) -> list[str]:
        """The P coordinate names of a particle (u0…, w0…, b; :attr:`ResidualUnit.param_names`)."""
        return self.unit.param_names

    def layers(self, layer, N: int) -> Layers:
        """The layer structure of N particles with coordinates ``layer`` [N] (validated)."""
        return Layers.from_coordinates(layer, N, depth=self.depth)

    def check_theta(self, theta) -> torch.Tensor:
        """θ [N, P] or [B, N, P] as [B, N, P]; ``ConfigError`` when it is not a tensor of
        that rank or its last dimension is not P."""
        theta = as_batched(theta)
        self.unit.split(theta)
        return theta

    def check_data(self, X, Y=None):
        """(X [B|1, n, d_in], Y [B|1, n, d_out] or [B|1, n] labels) as tensors; ConfigError on bad shapes."""
        X = torch.as_tensor(X)
        if not torch.is_floating_point(X):
            X = X.to(torch.float64)
        if X.dim() == 2:
            X = X.unsqueeze(0)
        if X.dim() != 3 or X.shape[-1] != self.d_in:
            raise ConfigError(f"inputs must have shape [n, {self.d_in}] (d_in = A.shape[1]), got {list(X.shape)}")
        if X.shape[-2] < 1:
            raise ConfigError("the dataset is empty")
        if Y is None:
            return X, None
        Y = torch.as_tensor(Y)
        if self.loss_name == "squared":
            if not torch.is_floating_point(Y):
                Y = Y.to(torch.float64)
            if Y.dim() == 2:
                Y = Y.unsqueeze(0)
            if Y.dim() != 3 or Y.shape[-1] != self.d_out or Y.shape[-2] != X.shape[-2]:
                raise ConfigError(f"targets must have shape [{X.shape[-2]}, {self.d_out}] (d_out = B.shape[0]), "
                                  f"got {list(Y.shape)}")
        else:
            if torch.is_floating_point(Y):
                if not torch.equal(Y, torch.round(Y)):
                    raise ConfigError("cross-entropy labels must be integers")
                Y = Y.long()
            if Y.dim() == 1:
                Y = Y.unsqueeze(0)
            if Y.dim() != 2 or Y.shape[-1] != X.shape[-2]:
                raise ConfigError(f"labels must have shape [{X.shape[-2]}], got {list(Y.shape)}")
            if (Y < 0).any() or (Y >= self.d_out).any():
                raise ConfigError(f"labels must lie in 0..{self.d_out - 1} (d_out = B.shape[0] classes)")
        return X, Y

    # ---- forward -----------------------------------------------------------------------
    def _increment(self, sums, x, th, c):
        return sums.field(self.unit, x, th, c)

    def _layer_step(self, sums, x, th, c):
        """One layer: ``substeps`` steps of the scheme for dx = G_l(x)."""
        c = c / self.substeps
        for _ in range(self.substeps):
            G = lambda y: self._increment(sums, y, th, c)    # noqa: E731
            if self.scheme == "euler":
                x = x + G(x)
            elif self.scheme == "midpoint":
                x = x + G(x + 0.5 * G(x))
            else:
                k1 = G(x)
                k2 = G(x + 0.5 * k1)
                k3 = G(x + 0.5 * k2)
                k4 = G(x + k3)
                x = x + (k1 + 2 * k2 + 2 * k3 + k4) / 6
        return x

    def embed(self, X: torch.Tensor) -> torch.Tensor:
        """x(0) = A x_in: X [B|1, n, d_in] → [B|1, n, D]."""
        return X @ self.A.to(dtype=X.dtype, device=X.device).T

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """B x(1): [B, n, D] → [B, n, d_out]."""
        return x @ self.B.to(dtype=x.dtype, device=x.device).T

    def forward(self, theta, weights, layers: Layers, X, *, sums=None, states: bool = False):
        """Outputs B x(1) [B, n, d_out] for θ [B, N, P] (or [N, P]), weights (None: 1/N),
        inputs X [n, d_in]; with ``states`` also the list [x_0, …, x_L] of [B, n, D] states
        at the layer boundaries."""
        sums = sums or _DENSE
        theta = self.check_theta(theta)
        m = as_weights(weights, theta)
        X, _ = self.check_data(X)
        x = self.embed(X.to(dtype=theta.dtype, device=theta.device))
        x = x.expand(theta.shape[0], *x.shape[1:]) if x.shape[0] == 1 else x
        xs = [x]
        for l in range(layers.L):
            x = self._layer_step(sums, x, layers.take(theta, l), layers.take(m, l))
            if states:
                xs.append(x)
        out = self.readout(x)
        return (out, xs) if states else out

    # ---- losses -------------------------------------------------------------------------
    def sample_loss(self, out, Y) -> torch.Tensor:
        """ℓ(B x_k(1), y_k) per sample, [B, n]."""
        if self.loss_name == "squared":
            return ((out - Y.to(out.dtype)) ** 2).sum(-1)
        logp = torch.log_softmax(out, dim=-1)
        Yb = Y.expand(out.shape[0], -1) if Y.shape[0] == 1 else Y
        return -logp.gather(-1, Yb.unsqueeze(-1)).squeeze(-1)

    def loss(self, out, Y) -> torch.Tensor:
        """L = (1/n) Σ_k ℓ(B x_k(1), y_k), [B]."""
        return self.sample_loss(out, Y).mean(-1)

    def loss_grad(self, out, Y) -> torch.Tensor:
        """∇_z ℓ(z, y_k) at z = B x_k(1) per sample, [B, n, d_out]: 2(z − y) or softmax(z) − e_y."""
        if self.loss_name == "squared":
            return 2.0 * (out - Y.to(out.dtype))
        Yb = Y.expand(out.shape[0], -1) if Y.shape[0] == 1 else Y
        g = torch.softmax(out, dim=-1)
        return g - torch.nn.functional.one_hot(Yb, self.d_out).to(g.dtype)

    # ---- adjoint and first variation -------------------------------------------------------
    def adjoint(self, theta, weights, layers: Layers, X, Y, *, sums=None):
        """Forward states and per-sample adjoints (Euler): returns (out [B, n, d_out],
        loss [B], xs, ps) with xs = [x_0 … x_L] and ps = [p_0 … p_L], each [B, n, D],
        p_L = Bᵀ∇ℓ(B x_L, y), p_l = p_{l+1} + (D_x G_l(x_l))ᵀ p_{l+1}.

        p_l,k = n ∂L/∂x_{l,k}: the discrete adjoint of the Euler forward."""
        if self.scheme != "euler" or self.substeps != 1:
            raise ConfigError(f"the explicit adjoint is the Euler one (scheme='euler', substeps=1); "
                              f"got scheme={self.scheme!r}, substeps={self.substeps}")
        sums = sums or _DENSE
        theta = self.check_theta(theta)
        m = as_weights(weights, theta)
        X, Y = self.check_data(X, Y)
        out, xs = self.forward(theta, m, layers, X, sums=sums, states=True)
        Y = Y.to(device=out.device)
        loss = self.loss(out, Y)
        p = self.loss_grad(out, Y) @ self.B.to(dtype=out.dtype, device=out.device)   # (B, n, D)
        ps = [p]
        for l in reversed(range(layers.L)):
            p = p + sums.field_vjp(self.unit, xs[l], layers.take(theta, l), layers.take(m, l), p)
            ps.append(p)
        return out, loss, xs, ps[::-1]

    def evaluate(self, theta, weights, layers: Layers, X, Y, *, sums=None, value: bool = False) -> ResNetPotential:
        """Loss, ∇_θ(δL/δμ)(s_j, θ_j) [B, N, P] and (``value``) (δL/δμ)(s_j, θ_j) [B, N].

        Euler: the explicit adjoint, grad_j = (1/n) Σ_k ∇_θ⟨p_{l+1,k}, φ(x_{l,k}; θ_j)⟩.
        Midpoint / RK4 / sub-steps: autograd of the discretised loss, grad_j = (1/m_j) ∂L/∂θ_j,
        value_j = ∂L/∂m_j (the first variation of the discrete scheme)."""
        theta = self.check_theta(theta)
        m = as_weights(weights, theta)
        if self.scheme != "euler" or self.substeps != 1:
            return self._evaluate_autograd(theta, m, layers, X, Y, value)
        sums = sums or _DENSE
        X, Y = self.check_data(X, Y)
        out, xs = self.forward(theta, m, layers, X, sums=sums, states=True)
        Y = Y.to(device=out.device)
        loss = self.loss(out, Y)
        p = self.loss_grad(out, Y) @ self.B.to(dtype=out.dtype, device=out.device)   # p_L (B, n, D)
        n = xs[0].shape[-2]
        a = torch.full((1, n), 1.0 / n, dtype=theta.dtype, device=theta.device)
        grad = theta.new_empty((out.shape[0], theta.shape[1], theta.shape[2]))
        val = theta.new_empty((out.shape[0], theta.shape[1])) if value else None
        for l in reversed(range(layers.L)):         # p holds p_{l+1}
            th, c = layers.take(theta, l), layers.take(m, l)
            if value:
                layers.put(val, l, sums.value(self.unit, xs[l], th, p, a))
            vjp, g = _backward(sums, self.unit, xs[l], th, c, p, a)
            layers.put(grad, l, g)
            p = p + vjp
        return ResNetPotential(loss=loss, grad=grad, out=out, value=val)

    def _evaluate_autograd(self, theta, m, layers, X, Y, value):
        X, Y = self.check_data(X, Y)
        with torch.enable_grad():
            th = theta.detach().clone().requires_grad_(True)
            mm = m.detach().expand(theta.shape[0], -1).clone().requires_grad_(True)
            out = self.forward(th, mm, layers, X)
            loss = self.loss(out, Y.to(device=out.device))
            g_th, g_m = torch.autograd.grad(loss.sum(), (th, mm))
        grad = g_th / mm.detach().unsqueeze(-1)
        return ResNetPotential(loss=loss.detach(), grad=grad, out=out.detach(),
                               value=g_m if value else None)

    def first_variation(self, theta, weights, layers: Layers, X, Y, probe_theta, probe_s, *,
                        sums=None, grad: bool = False):
        """(δL/δμ)(s, θ) at probes θ [B|1, Q, P] with coordinates s [Q] (Euler), [B, Q];
        with ``grad`` also ∇_θ(δL/δμ)(s, θ) [B, Q, P].

        A probe s belongs to the last layer whose coordinate is ≤ s (the first layer if
        none): (δL/δμ)(s, θ) = (1/n) Σ_k ⟨p_{l+1,k}, φ(x_{l,k}; θ)⟩."""
        sums = sums or _DENSE
        pt = self.check_theta(probe_theta)
        s = torch.as_tensor(probe_s, dtype=torch.float64).reshape(-1)
        if s.shape[0] != pt.shape[1]:
            raise ConfigError(f"probe_s has {s.shape[0]} coordinates for {pt.shape[1]} probes")
        out, loss, xs, ps = self.adjoint(theta, weights, layers, X, Y, sums=sums)
        lidx = (torch.searchsorted(layers.s, s, right=True) - 1).clamp(min=0)
        n = xs[0].shape[-2]
        a = torch.full((1, n), 1.0 / n, dtype=pt.dtype, device=pt.device)
        B = xs[0].shape[0]
        vals = pt.new_zeros((B, pt.shape[1]))
        grads = pt.new_zeros((B, pt.shape[1], pt.shape[2])) if grad else None
        for l in torch.unique(lidx).tolist():
            idx = (lidx == l).nonzero().squeeze(-1).to(pt.device)
            th = pt.index_select(1, idx)
            vals[:, idx] = sums.value(self.unit, xs[l], th, ps[l + 1], a)
            if grad:
                grads[:, idx] = sums.param_grad(self.unit, xs[l], th, ps[l + 1], a)
        return (vals, grads) if grad else vals

    # ---- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        """The model's settings as a JSON-serialisable dict (D, d_in, d_out, unit, loss,
        scheme, substeps, depth); A and B are in :meth:`arrays`."""
        return {"D": self.D, "d_in": self.d_in, "d_out": self.d_out, "unit": self.unit.to_dict(),
                "loss": self.loss_name, "scheme": self.scheme, "substeps": self.substeps,
                "depth": self.depth}

    def arrays(self) -> dict:
        """A and B (saved in particles.npz)."""
        return {"embedding_A": self.A.numpy(), "readout_B": self.B.numpy()}


# ---- constructors --------------------------------------------------------------------------
def lift_matrices(d: int, copies: int, d_out: Optional[int] = None):
    """The lifting of Barboni–Peyré–Vialard (2022): A = (I_d, …, I_d)ᵀ [copies·d, d] copies
    the input, B = (I, 0, …, 0) [d_out, copies·d] reads the first block (d_out = d by default)."""
    d = check_positive_int("d", d)
    k = check_positive_int("copies", copies)
    d_out = d if d_out is None else check_positive_int("d_out", d_out)
    A = torch.cat([torch.eye(d, dtype=torch.float64)] * k, dim=0)
    B = torch.zeros(d_out, k * d, dtype=torch.float64)
    B[:, :min(d_out, k * d)] = torch.eye(d_out, min(d_out, k * d), dtype=torch.float64)
    return A, B


def grid_measure(theta, *, param_names=None) -> ParticleMeasure:
    """The particle measure of an L × M ResNet: θ [L, M, P] (or [B, L, M, P]) → positions
    [L·M, P] (or [B, L·M, P]) with layer s = l/L for the M units of layer l, uniform weights."""
    theta = torch.as_tensor(theta)
    if theta.dim() not in (3, 4):
        raise ConfigError(f"grid parameters must have shape [L, M, P] or [B, L, M, P], got {list(theta.shape)}")
    L, M, P = theta.shape[-3:]
    if L < 1 or M < 1:
        raise ConfigError(f"a ResNet grid needs L >= 1 layers of M >= 1 units, got L={L}, M={M}")
    layer = (torch.arange(L, dtype=torch.float64) / L).repeat_interleave(M)
    pos = theta.reshape(*theta.shape[:-3], L * M, P)
    return ParticleMeasure(pos, layer=layer, param_names=param_names)


def random_fourier_units(M: int, D: int, *, nu: float, generator: torch.Generator,
                         lengthscale: float = 1.0, replicas: int = 1) -> torch.Tensor:
    """Random Fourier features as units of the RKHS ResNet (Barboni–Peyré–Vialard 2022):
    θ_j = (u_j = 0, w_j = ω_j, b_j = φ_j) with σ = cos, so that the residual
    Σ_j m_j u_j cos(⟨ω_j, x⟩ + φ_j) is Θ_s ψ(x) with ψ_j(x) = cos(⟨ω_j, x⟩ + φ_j).

    ω_j = g_j sqrt(2ν / χ²_{2ν}) / ℓ with g_j ~ N(0, I_D): a multivariate Student t with 2ν
    degrees of freedom, the spectral density of the Matérn-ν kernel of length ℓ (ν = inf:
    ω_j ~ N(0, I_D/ℓ²), the Gaussian kernel); φ_j ~ U[0, 2π).  Then
    E[ψ(x)ψ(x')] = ½ k_ν(|x − x'|) (:func:`matern_kernel`).  χ²_{2ν} is a sum of 2ν squared
    normals, so ν must be a half-integer (2ν ∈ N) or inf.  Returns [replicas, M, 2D + 1]."""
    M = check_positive_int("M", M)
    D = check_positive_int("D", D)
    R = check_positive_int("replicas", replicas)
    nu = float(nu)
    if not (nu == math.inf or (nu > 0 and abs(2 * nu - round(2 * nu)) < 1e-12)):
        raise ConfigError(f"nu must be a half-integer (0.5, 1, 1.5, …) or inf, got {nu!r}")
    if not (math.isfinite(lengthscale) and lengthscale > 0):
        raise ConfigError(f"lengthscale must be finite and > 0, got {lengthscale!r}")
    g = torch.randn(R, M, D, generator=generator, dtype=torch.float64)
    if nu != math.inf:
        k = int(round(2 * nu))
        chi2 = (torch.randn(R, M, k, generator=generator, dtype=torch.float64) ** 2).sum(-1, keepdim=True)
        g = g * torch.sqrt(2 * nu / chi2)
    phase = 2 * math.pi * torch.rand(R, M, 1, generator=generator, dtype=torch.float64)
    return torch.cat([torch.zeros(R, M, D, dtype=torch.float64), g / lengthscale, phase], -1)


def matern_kernel(r, nu: float, lengthscale: float = 1.0):
    """k_ν(r) for ν ∈ {0.5, 1.5, 2.5, inf} (closed forms): e^{−r/ℓ}, (1 + √3 r/ℓ) e^{−√3 r/ℓ},
    (1 + √5 r/ℓ + 5r²/(3ℓ²)) e^{−√5 r/ℓ}, e^{−r²/(2ℓ²)}."""
    r = torch.as_tensor(r, dtype=torch.float64) / lengthscale
    if nu == 0.5:
        return torch.exp(-r)
    if nu == 1.5:
        return (1 + math.sqrt(3) * r) * torch.exp(-math.sqrt(3) * r)
    if nu == 2.5:
        return (1 + math.sqrt(5) * r + 5 * r * r / 3) * torch.exp(-math.sqrt(5) * r)
    if nu == math.inf:
        return torch.exp(-0.5 * r * r)
    raise ConfigError(f"closed-form Matérn kernels: nu in 0.5, 1.5, 2.5, inf; got {nu!r}")


# ---- the link with a plain torch ResNet -------------------------------------------------------
class ResidualBlock(torch.nn.Module):
    """x ↦ x + scale · Σ_j u_j σ(⟨w_j, x⟩ + b_j) with M units (U [M, D], W [M, D], b [M])."""

    def __init__(self, D: int, M: int, activation="tanh", bias: bool = True, scale: float = 1.0,
                 dtype=torch.float32):
        super().__init__()
        self.act = residual_activation(activation)
        self.scale = float(scale)
        self.U = torch.nn.Parameter(torch.zeros(M, D, dtype=dtype))
        self.W = torch.nn.Parameter(torch.zeros(M, D, dtype=dtype))
        self.b = torch.nn.Parameter(torch.zeros(M, dtype=dtype)) if bias else None

    def forward(self, x):
        """x [..., D] → x + scale · σ(x Wᵀ + b) U, [..., D]."""
        z = x @ self.W.T
        if self.b is not None:
            z = z + self.b
        return x + self.scale * (self.act(z) @ self.U)


class ResNetModule(torch.nn.Module):
    """A plain ResNet: x_0 = A x_in, L residual blocks of width M with scale 1/(L·M),
    output B x_L; ``loss(x_in, y)`` is the model's loss (mean over the batch)."""

    def __init__(self, A, B, L: int, M: int, *, activation="tanh", bias: bool = True,
                 loss: str = "squared", dtype=torch.float32):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=dtype))
        self.register_buffer("B", torch.as_tensor(B, dtype=dtype))
        self.activation_name = residual_activation(activation).to_dict()["name"]
        self.loss_name = loss
        self.bias = bias
        D = self.A.shape[0]
        self.blocks = torch.nn.ModuleList(
            ResidualBlock(D, M, activation, bias, 1.0 / (L * M), dtype) for _ in range(L))

    def forward(self, x_in):
        """x_in [n, d_in] → B x_L [n, d_out] (x_0 = A x_in, then the L blocks)."""
        x = x_in @ self.A.T
        for blk in self.blocks:
            x = blk(x)
        return x @ self.B.T

    def loss(self, x_in, y):
        """The batch-mean loss, as :meth:`ResNet.loss`: mean_k |out_k − y_k|² (squared, y
        [n, d_out]) or ``cross_entropy(out, y)`` (integer labels y [n]); a scalar tensor."""
        out = self.forward(x_in)
        if self.loss_name == "squared":
            return ((out - y) ** 2).sum(-1).mean()
        return torch.nn.functional.cross_entropy(out, y)


def to_module(model: ResNet, measure: ParticleMeasure, *, dtype=None) -> ResNetModule:
    """The plain ResNet of an L × M particle measure (uniform weights, M units in each of
    L layers): block l holds layer l's units in particle order, residual scale 1/(L·M).

    Its forward is the model's Euler forward; L·M × its parameter gradient is the
    conditional-OT gradient ∇_θ δL/δμ."""
    if not isinstance(measure, ParticleMeasure):
        raise ConfigError(f"to_module needs a ParticleMeasure, got {type(measure).__name__}")
    if measure.positions.dim() != 2:
        raise ConfigError("to_module converts one replica: positions must be [N, P]")
    theta = model.check_theta(measure.positions)[0]
    layers = model.layers(measure.layer, measure.N)
    grid = layers.grid()
    if grid is None:
        raise ConfigError(f"to_module needs the same number of units in every layer, got widths {layers.widths}")
    if measure.weights is not None:
        w = measure.weights.double()
        if (w - 1.0 / measure.N).abs().max() > 1e-12:
            raise ConfigError("to_module needs uniform weights 1/N (residual scale 1/(L·M))")
    L, M = grid
    dtype = dtype or theta.dtype
    mod = ResNetModule(model.A, model.B, L, M, activation=model.unit.activation, bias=model.unit.bias,
                       loss=model.loss_name, dtype=dtype).to(theta.device)
    with torch.no_grad():
        for l, blk in enumerate(mod.blocks):
            u, w, b = model.unit.split(layers.take(theta[None], l)[0])
            blk.U.copy_(u)
            blk.W.copy_(w)
            if b is not None:
                blk.b.copy_(b)
    return mod


def from_module(module: ResNetModule):
    """(model, measure) from a plain ResNet of L blocks of width M: particles θ = (u, w, b) of
    block l at layer s = l/L with weights 1/(L·M), A, B and the activation copied."""
    if not isinstance(module, ResNetModule):
        raise ConfigError(f"from_module needs a ResNetModule, got {type(module).__name__}")
    L = len(module.blocks)
    if L < 1:
        raise ConfigError("the module has no residual blocks")
    model = ResNet(module.A.detach().double(), module.B.detach().double(),
                   activation=module.activation_name, bias=module.bias, loss=module.loss_name)
    parts = []
    for blk in module.blocks:
        cols = [blk.U.detach(), blk.W.detach()] + ([blk.b.detach()[:, None]] if blk.b is not None else [])
        parts.append(torch.cat(cols, -1))
    widths = {p.shape[0] for p in parts}
    if len(widths) != 1:
        raise ConfigError(f"blocks of different widths {sorted(widths)}: not an L × M ResNet")
    return model, grid_measure(torch.stack(parts), param_names=model.param_names)


__all__ = ["LOSSES", "SCHEMES", "RESIDUAL_ACTIVATIONS", "DenseSums", "Layers", "ResNet",
           "ResNetModule", "ResNetPotential", "ResidualBlock", "ResidualUnit", "from_module",
           "grid_measure", "lift_matrices", "matern_kernel", "random_fourier_units", "residual_activation",
           "to_module"]
