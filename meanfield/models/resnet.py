"""The measure-valued ResNet (docs/design.md §1 "ResNets"; Barboni–Peyré–Vialard 2022, 2024).

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

from dataclasses import dataclass
from typing import Optional

import torch

from ..errors import ConfigError, check_positive_int
from ..measure import ParticleMeasure
from .resnet_unit import _DENSE, RESIDUAL_ACTIVATIONS, DenseSums, ResidualUnit, _backward, residual_activation
from .tasks import as_batched, as_weights

# This module is the model.  The residual unit φ, its activations and the dense sums are in
# ``resnet_unit``; the random-feature initialisers in ``resnet_init``; the bridge to a plain
# torch.nn.Module in ``resnet_torch``.  Their public names are re-exported here.

LOSSES = ("squared", "cross_entropy")
SCHEMES = ("euler", "midpoint", "rk4")


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
        saved = None
        if self._can_save(sums, theta, layers, X.shape[-2]):
            out, xs, saved = self._forward_saving(theta, m, layers, X)
        else:
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
            if saved is not None:
                vjp, g = self.unit.backward_saved(xs[l], th, c, p, a, *saved[l])
                saved[l] = None                     # free layer l's [B, n, M] pair
            else:
                vjp, g = _backward(sums, self.unit, xs[l], th, c, p, a)
            layers.put(grad, l, g)
            p = p + vjp
        return ResNetPotential(loss=loss, grad=grad, out=out, value=val)

    # The Euler gradient keeps σ(z) and σ'(z) of every layer from the forward pass (2 [B, n, M_l]
    # tensors per layer) when they fit in SAVE_ELEMS elements and the dense torch sums would not
    # tile the rows anyway: six [n, M]×[M|n, D] matmuls per layer instead of eight, the
    # minimum for one exact gradient (measured in ``benchmarks/resnet.py``).
    SAVE_ELEMS = 2 ** 26

    def _can_save(self, sums, theta, layers, n):
        if getattr(sums, "name", None) not in ("dense", "torch"):
            return False
        widest = max(layers.widths)
        if n * widest > getattr(sums, "tile_elems", n * widest):
            return False
        return 2 * theta.shape[0] * n * theta.shape[1] <= self.SAVE_ELEMS

    def _forward_saving(self, theta, m, layers, X):
        """Euler forward keeping (σ(z), σ'(z)) per layer: (out, [x_0 … x_L], saved)."""
        x = self.embed(X.to(dtype=theta.dtype, device=theta.device))
        x = x.expand(theta.shape[0], *x.shape[1:]) if x.shape[0] == 1 else x
        xs, saved = [x], []
        for l in range(layers.L):
            G, s, ds = self.unit.field_saving(x, layers.take(theta, l), layers.take(m, l))
            x = x + G
            xs.append(x)
            saved.append((s, ds))
        return self.readout(x), xs, saved

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


# ---- re-exports (the torch.nn.Module bridge lives in ``resnet_torch``, which imports this) ---
from .resnet_init import matern_kernel, random_fourier_units  # noqa: E402

__all__ = ["LOSSES", "SCHEMES", "RESIDUAL_ACTIVATIONS", "DenseSums", "Layers", "ResNet",
           "ResNetPotential", "ResidualUnit", "grid_measure", "lift_matrices", "matern_kernel",
           "random_fourier_units", "residual_activation"]
