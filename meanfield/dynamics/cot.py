"""Conditional-OT flow of a measure-valued ResNet (docs/design.md §1 "ResNets"; Barboni, Peyré,
Vialard 2024): particles (s_j, θ_j) move in θ only, the layer coordinate s_j never changes.

On the MMN time axis with Ψ = ½ δL/δμ (so that the two-layer and ResNet flows read alike),

    dθ_j = −2ξ(t) ∇_θ Ψ_λ(s_j, θ_j; μ) dt + sqrt(4ξ(t)/β) dB_j,    Ψ_λ = ½ δL/δμ + (λ/2)|θ|²,

i.e. the noiseless, unregularised velocity is v_j = −ξ ∇_θ(δL/δμ)(s_j, θ_j) = −ξ L·M ∇_{θ_j}L
for an L × M ResNet (ξ = 1: one Euler step of size dt is one SGD step of the plain ResNet
with learning rate L·M·dt).  The Euler–Maruyama step

    θ_j ← θ_j − s_k (g_j + 2λ θ_j) + sqrt(4 s_k / β(t_k)) ζ_j,   s_k = dt ξ(t_k),  t_{k+1} = t_k + dt,

with g_j = ∇_θ(δL/δμ)(s_j, θ_j) on the full dataset (``drift="population"``: GD) or on a
minibatch of ``batch_size`` samples drawn without replacement per replica (``drift="sgd"``,
an unbiased estimate).  ``train`` freezes coordinates (e.g. the RKHS ResNet trains u only:
frozen coordinates get neither drift nor noise).  β = ∞: no noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..errors import ConfigError, DivergenceError, check_finite_float, check_positive_int
from ..interact.resnet import get_resnet_sums
from ..measure import ParticleMeasure
from ..models.resnet import Layers, ResNet, ResNetPotential
from ..models.tasks import as_weights
from .particles import ParticleState
from .record import check_record_every, recorded_run
from .schedules import as_schedule

COT_DRIFTS = ("population", "sgd")


@dataclass
class ResNetState(ParticleState):
    """A ParticleState (θ [B, N, P], weights [1 or B, N] or None, step, t, generator) with the
    fixed layer coordinates ``layer`` [N] (float64, in [0, 1])."""

    layer: Optional[torch.Tensor] = None

    def measure(self, param_names=None) -> ParticleMeasure:
        """The particles as a ParticleMeasure carrying ``layer`` (positions [N, P] for one
        replica, else [B, N, P]).  ``ConfigError`` when the weights differ per replica."""
        if self.weights is not None and self.weights.shape[0] > 1:
            raise ConfigError("per-replica weights cannot form one ParticleMeasure")
        w = None if self.weights is None else self.weights[0]
        return ParticleMeasure(self.theta if self.theta.shape[0] > 1 else self.theta[0], weights=w,
                               layer=self.layer, param_names=param_names)

    def state_dict(self) -> dict:
        """:meth:`ParticleState.state_dict` plus a copy of ``layer`` [N]."""
        return {**super().state_dict(), "layer": self.layer.clone()}

    @classmethod
    def from_state_dict(cls, d: dict) -> "ResNetState":
        """The state saved by :meth:`state_dict` (layer included), generator restored."""
        g = torch.Generator(device=d.get("generator_device", "cpu"))
        g.set_state(d["generator"])
        return cls(d["theta"], d["weights"], int(d["step"]), float(d["t"]), g, d["layer"])


@dataclass
class CotStepInfo:
    """What a step saw at θ_k: the potential (loss and gradient on the data it used), the
    step size s_k = dt ξ(t_k) and β(t_k)."""

    potential: ResNetPotential
    step_size: float
    beta: float


class ConditionalOTFlow:
    """Conditional-OT particle flow of ``model`` on the dataset (X [n, d_in], Y).

    Parameters
    ----------
    model : the ResNet (WHAT is minimised).
    X, Y : the training data (Y: targets [n, d_out] or labels [n]).
    dt : time step on the MMN axis.
    drift : "population" (full-batch gradient) or "sgd" (minibatches of ``batch_size``).
    xi, beta : schedules ξ(t), β(t) (numbers or specs, see ``schedules``); β = inf: no noise.
    lam : L2 strength λ (Ψ_λ = ½δL/δμ + (λ/2)|θ|²).
    train : "all", "u" (output vectors only: the RKHS ResNet) or a boolean mask [P].
    backend : ResNet sums backend ("auto", "torch", "keops").
    """

    def __init__(self, model: ResNet, X, Y, *, dt: float, drift: str = "population",
                 batch_size: Optional[int] = None, xi=1.0, beta=math.inf, lam: float = 0.0,
                 train="all", backend="auto"):
        if not isinstance(model, ResNet):
            raise ConfigError(f"model must be a meanfield ResNet, got {type(model).__name__}")
        self.model = model
        self.X, self.Y = model.check_data(X, Y)
        self.n = self.X.shape[-2]
        self.dt = check_finite_float("dt", dt, positive=True)
        if drift not in COT_DRIFTS:
            raise ConfigError(f"unknown drift {drift!r}; choose one of {list(COT_DRIFTS)}")
        self.drift = drift
        if drift == "sgd":
            if batch_size is None:
                raise ConfigError("drift='sgd' needs a batch_size")
            self.batch_size = check_positive_int("batch_size", batch_size)
            if self.batch_size > self.n:
                raise ConfigError(f"batch_size {self.batch_size} exceeds the {self.n} data points")
        else:
            self.batch_size = self.n
        self.xi = as_schedule(xi, "xi")
        self.beta = as_schedule(beta, "beta")
        self.lam = check_finite_float("lam", lam, nonnegative=True)
        self.mask = self._mask(train)
        self.backend = backend
        get_resnet_sums(backend) if backend != "auto" else None     # validate the name now
        self._layers_key = None
        self._layers = None

    def _mask(self, train):
        P = self.model.P
        if isinstance(train, str):
            if train == "all":
                return None
            if train == "u":
                m = torch.zeros(P, dtype=torch.bool)
                m[:self.model.D] = True
                return m
            raise ConfigError(f"train must be 'all', 'u' or a boolean mask of length {P}, got {train!r}")
        m = torch.as_tensor(train, dtype=torch.bool)
        if m.shape != (P,):
            raise ConfigError(f"train mask must have length P={P}, got {list(m.shape)}")
        return None if bool(m.all()) else m

    # ------------------------------------------------------------------------------
    def init(self, theta, layer=None, *, weights=None, generator: torch.Generator | None = None,
             seed: int | None = None) -> ResNetState:
        """Initial state from θ [N, P] / [B, N, P] and ``layer`` [N], or a ParticleMeasure
        carrying its layer.  Pass a ``generator`` (used from now on) or a ``seed``."""
        if isinstance(theta, ParticleMeasure):
            layer = theta.layer if layer is None else layer
            weights = theta.weights if weights is None else weights
            theta = theta.batched
        theta = self.model.check_theta(theta)
        if not torch.isfinite(theta).all():
            raise ConfigError("initial particle positions contain non-finite values")
        layers = self.model.layers(layer, theta.shape[1])          # validates s ∈ [0, 1], empty layers
        if generator is None:
            if seed is None:
                raise ConfigError("pass a generator or a seed: randomness lives in the state")
            generator = torch.Generator(device=theta.device).manual_seed(int(seed))
        w = None
        if weights is not None:
            w = as_weights(weights, theta)
            if not torch.isfinite(w).all() or (w < 0).any():
                raise ConfigError("weights must be finite and non-negative")
            if (w.sum(-1) - 1).abs().max() > 1e-6:
                raise ConfigError(f"weights must sum to 1 (per replica), got {w.sum(-1).tolist()}")
        s = torch.as_tensor(layer, dtype=torch.float64).detach().cpu().clone()
        self._layers_key, self._layers = s, layers
        return ResNetState(theta.clone(), w, 0, 0.0, generator, s)

    def layers(self, state: ResNetState) -> Layers:
        """The (cached) layer structure of the state's particles."""
        if self._layers_key is None or not (self._layers_key.shape == state.layer.shape
                                            and torch.equal(self._layers_key, state.layer)):
            self._layers = self.model.layers(state.layer, state.theta.shape[1])
            self._layers_key = state.layer
        return self._layers

    def sums(self, n: int, state: ResNetState):
        """The ResNet sums backend (``interact.resnet.get_resnet_sums``) for ``n`` data points
        and this state: ``backend`` resolved with M = the widest layer, D, σ and θ's device."""
        M = max(self.layers(state).widths)
        return get_resnet_sums(self.backend, n=n, M=M, D=self.model.D,
                               activation=self.model.unit.activation.to_dict()["name"],
                               device=state.theta.device)

    def batch(self, state: ResNetState):
        """The data of one step: all of it, or a minibatch per replica (drift="sgd")."""
        X = self.X.to(dtype=state.theta.dtype, device=state.theta.device)
        Y = self.Y.to(device=state.theta.device)
        if self.drift == "population":
            return X, Y
        Bn = state.theta.shape[0]
        idx = torch.rand(Bn, self.n, generator=state.generator, device=state.generator.device,
                         dtype=torch.float64).argsort(-1)[:, :self.batch_size].to(state.theta.device)
        Xb = X.expand(Bn, -1, -1) if X.shape[0] == 1 else X
        Yb = Y.expand(Bn, *Y.shape[1:]) if Y.shape[0] == 1 else Y
        Xs = torch.gather(Xb, 1, idx.unsqueeze(-1).expand(-1, -1, X.shape[-1]))
        if Yb.dim() == 3:
            Ys = torch.gather(Yb, 1, idx.unsqueeze(-1).expand(-1, -1, Yb.shape[-1]))
        else:
            Ys = torch.gather(Yb, 1, idx)
        return Xs, Ys

    def potential(self, state: ResNetState, X=None, Y=None, *, value: bool = False) -> ResNetPotential:
        """Loss and ∇_θ(δL/δμ) at the current positions on (X, Y), or on this step's data."""
        if X is None:
            X, Y = self.batch(state)
        return self.model.evaluate(state.theta, state.weights, self.layers(state), X, Y,
                                   sums=self.sums(X.shape[-2], state), value=value)

    def loss(self, state: ResNetState, X=None, Y=None) -> torch.Tensor:
        """L(μ) [B] on (X, Y) (default: the full training set), no gradient."""
        X = self.X if X is None else X
        Y = self.Y if Y is None else Y
        X, Y = self.model.check_data(X, Y)
        out = self.model.forward(state.theta, state.weights, self.layers(state),
                                 X.to(dtype=state.theta.dtype, device=state.theta.device),
                                 sums=self.sums(X.shape[-2], state))
        return self.model.loss(out, Y.to(device=out.device))

    def _masked(self, v):
        return v if self.mask is None else v * self.mask.to(device=v.device, dtype=v.dtype)

    def velocity(self, state: ResNetState, potential: ResNetPotential | None = None) -> torch.Tensor:
        """v_j = −ξ(t)(∇_θ(δL/δμ)(s_j, θ_j) + 2λθ_j) on the trained coordinates, [B, N, P]."""
        pot = potential if potential is not None else self.potential(state)
        return self._masked(-self.xi(state.t) * (pot.grad + 2.0 * self.lam * state.theta))

    def step(self, state: ResNetState, *, dt: float | None = None) -> tuple[ResNetState, CotStepInfo]:
        """One Euler–Maruyama step; returns the new state and what the step saw at θ_k."""
        dt = self.dt if dt is None else check_finite_float("dt", dt, positive=True)
        pot = self.potential(state)
        s = dt * self.xi(state.t)
        beta = self.beta(state.t)
        theta = state.theta + self._masked(-s * (pot.grad + 2.0 * self.lam * state.theta))
        if beta != math.inf:
            if not beta > 0:
                raise ConfigError(f"beta must be > 0, got {beta} at t={state.t}")
            noise = torch.randn(theta.shape, generator=state.generator, dtype=theta.dtype,
                                device=state.generator.device).to(theta.device)
            theta = theta + math.sqrt(4.0 * s / beta) * self._masked(noise)
        if not torch.isfinite(theta).all():
            gnorm = float(pot.grad.norm(dim=-1).max())
            raise DivergenceError(
                f"step {state.step}: non-finite ResNet particles (max |∇δL/δμ| = {gnorm:.3g}, "
                f"step size ξdt = {s:.3g}); the step size is likely too large")
        new = replace(state, theta=theta, step=state.step + 1, t=float(f"{state.t + dt:.15g}"))
        return new, CotStepInfo(potential=pot, step_size=s, beta=beta)

    def run(self, state: ResNetState, steps: int, *, record_every: int | None = None):
        """Advance ``steps`` steps (the step loop: no compiled ResNet loop exists).

        Returns the new state; with ``record_every = k`` the pair (state, ``RunRecord``)
        holding step, t and the training loss L(μ) per replica (as ``risk``) at the start,
        every k steps and at the end (``dynamics.record``).  Full-batch drift reuses the
        step's own loss; minibatch drift evaluates :meth:`loss` on the whole training set,
        which draws nothing: a recorded run ends in exactly the state of an unrecorded one.
        ``ConfigError`` for a negative or non-integer ``steps`` or ``record_every`` < 1."""
        steps = check_positive_int("steps", steps, allow_zero=True)
        every = check_record_every(record_every)

        def advance(s, k):
            first = None
            for i in range(k):
                s, info = self.step(s)
                if i == 0 and self.drift == "population":
                    first = (info.potential.loss, None)
            return s, first

        if every is None:
            return advance(state, steps)[0]
        return recorded_run(state, steps, every, advance, lambda s: (self.loss(s), None))


def conditional_ot_flow(model, X, Y, *, dt, **kw) -> ConditionalOTFlow:
    """Full-batch conditional-OT gradient flow (β = ∞ unless given)."""
    return ConditionalOTFlow(model, X, Y, dt=dt, drift="population", **kw)


def resnet_sgd(model, X, Y, *, dt, batch_size, **kw) -> ConditionalOTFlow:
    """Minibatch SGD of the conditional-OT flow (``batch_size`` samples per step, same time axis)."""
    return ConditionalOTFlow(model, X, Y, dt=dt, drift="sgd", batch_size=batch_size, **kw)


__all__ = ["COT_DRIFTS", "ConditionalOTFlow", "CotStepInfo", "ResNetState", "conditional_ot_flow",
           "resnet_sgd"]
