"""Particle dynamics on the MMN time axis (docs/design.md §1).

One explicit Euler–Maruyama scheme covers every case:

    θ_i ← θ_i − 2 s_k (g_i + λ θ_i) + sqrt(4 s_k / β(t_k)) ζ_i,   s_k = dt · ξ(t_k),  t_{k+1} = t_k + dt

where g_i estimates ∇_θΨ(θ_i; ρ_N) and ζ_i ~ N(0, I):

* ``drift="population"``: g = ∇Ψ exactly (closed-form tasks through an interaction
  backend, or the full empirical risk of a finite dataset) — Wasserstein gradient descent,
  i.e. the particle discretisation of ∂_t ρ = 2ξ ∇·(ρ ∇Ψ_λ) + 2ξβ⁻¹Δρ.
* ``drift="sgd"``: g = (1/n) Σ_k (f(x_k) − y_k) ∇_θφ(x_k; θ_i) from n = ``batch_size``
  fresh samples per step; n = 1 is MMN's online SGD
  θ_i ← (1 − 2λs_k)θ_i + 2 s_k (y_k − f(x_k)) ∇_θφ(x_k; θ_i) + sqrt(4 s_k/β) ζ_i  with ε = dt.

β = ∞ switches the noise off (no entropy); finite β is noisy SGD / mean-field Langevin,
whose fixed points are the Gibbs measures ρ ∝ exp(−β Ψ_λ(·; ρ)).  B replicas (independent
systems, each with its own samples and noise) advance together in θ [B, N, D].

Shapes: a state keeps the caller's layout — started from θ [N, D] (or a ParticleMeasure with
positions [N, D]) its ``theta`` stays [N, D]; from [B, N, D] it stays [B, N, D].  Potentials
(``StepInfo.potential``, :meth:`ParticleDynamics.potential`) are always batched ([B, N] …).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import torch

from ..errors import ConfigError, DivergenceError, check_finite_float, check_positive_int
from ..interact import evaluate, get_backend
from ..measure import ParticleMeasure
from ..models.tasks import Potential, Task, as_batched, as_weights
from .record import check_record_every, recorded_run
from .schedules import as_schedule

DRIFTS = ("population", "sgd")


@dataclass
class ParticleState:
    """The full state of a particle system: positions θ [B, N, D], weights [1 or B, N] or
    None (uniform), step k, time t = Σ dt, and the torch.Generator that drives all randomness."""

    theta: torch.Tensor
    weights: Optional[torch.Tensor]
    step: int
    t: float
    generator: torch.Generator

    @property
    def masses(self) -> torch.Tensor:
        """m [1 or B, N]: the weights, or uniform 1/N [1, N] when ``weights`` is None."""
        return as_weights(self.weights, self.theta)

    def measure(self, param_names=None) -> ParticleMeasure:
        """The particles as a ParticleMeasure (positions [N, D] for one replica, else
        [B, N, D]; shares θ's storage).  ``ConfigError`` when the weights differ per replica."""
        if self.weights is not None and self.weights.shape[0] > 1:
            raise ConfigError("per-replica weights cannot form one ParticleMeasure; "
                              "use state.theta and state.weights directly")
        w = None if self.weights is None else self.weights[0]
        th = self.theta
        return ParticleMeasure(th if th.dim() == 2 or th.shape[0] > 1 else th[0],
                               weights=w, param_names=param_names)

    def state_dict(self) -> dict:
        """A checkpointable dict: theta (a copy), weights, step, t and the generator's state
        (a uint8 tensor); :meth:`from_state_dict` restores it bit for bit."""
        return {"theta": self.theta.clone(), "weights": self.weights, "step": self.step,
                "t": self.t, "generator": self.generator.get_state(),
                "generator_device": str(self.generator.device)}

    @classmethod
    def from_state_dict(cls, d: dict) -> "ParticleState":
        """The state saved by :meth:`state_dict`, with a new generator on the saved
        generator's device (CPU by default) set to its saved state (so the random stream
        continues where it stopped)."""
        g = torch.Generator(device=d.get("generator_device", "cpu"))
        g.set_state(d["generator"])
        return cls(d["theta"], d["weights"], int(d["step"]), float(d["t"]), g)


@dataclass
class StepInfo:
    """What one step saw at θ_k (before moving): the drift estimate and, for population
    drift, the exact potential (so the risk at θ_k comes for free)."""

    potential: Potential
    step_size: float          # s_k = dt ξ(t_k)
    beta: float               # β(t_k)


class ParticleDynamics:
    """Euler–Maruyama particle dynamics (see the module docstring for the update).

    Parameters
    ----------
    task : the task (WHAT is minimised).
    dt : time step on the MMN axis (ε for SGD).
    drift : "population" (exact ∇Ψ) or "sgd" (fresh batches of ``batch_size``).
    xi : step-size schedule ξ(t) (number or spec, see ``schedules``).
    beta : inverse temperature β(t) (number, ``inf`` or schedule spec).
    lam : L2 strength λ in Ψ_λ = Ψ + (λ/2)|θ|².
    backend : interaction backend for population drift ("auto", "numpy", "torch", "keops").

    ``deterministic`` is True when nothing random happens (population drift, β = ∞ at all
    times): :meth:`init` then needs no generator or seed.
    """

    def __init__(self, task: Task, *, dt: float, drift: str = "population", batch_size: int = 1,
                 xi=1.0, beta=math.inf, lam: float = 0.0, backend="auto"):
        if not isinstance(task, Task):
            raise ConfigError(f"task must be a meanfield Task, got {type(task).__name__}")
        self.task = task
        self.dt = check_finite_float("dt", dt, positive=True)
        if drift not in DRIFTS:
            raise ConfigError(f"unknown drift {drift!r}; choose one of {list(DRIFTS)}")
        if drift == "population" and not task.has_population:
            raise ConfigError(f"task {task.name!r} has no exact population gradient: "
                              f"{task.population_reason()}; use drift='sgd'")
        self.drift = drift
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.xi = as_schedule(xi, "xi")
        self.beta = as_schedule(beta, "beta")
        self.lam = check_finite_float("lam", lam, nonnegative=True)
        self.backend = backend
        get_backend(backend) if backend != "auto" else None  # validate the name now

    # ------------------------------------------------------------------------------
    @property
    def deterministic(self) -> bool:
        """Whether a step draws no random number: population drift and β(t) = ∞ for all t
        (a constant-∞ schedule)."""
        return (self.drift == "population" and self.beta.is_constant
                and self.beta.params[0] == math.inf)

    def init(self, theta, *, generator: torch.Generator | None = None, seed: int | None = None,
             weights=None) -> ParticleState:
        """Initial state from θ [N, D] / [B, N, D] or a ParticleMeasure; the state's ``theta``
        keeps that layout ([N, D] stays [N, D]).

        Pass a ``generator`` (used from now on) or a ``seed`` (a new generator on θ's
        device).  A :attr:`deterministic` dynamics (noiseless population GD) needs neither:
        it gets a generator seeded with 0 that it never draws from."""
        if isinstance(theta, ParticleMeasure):
            weights = theta.weights if weights is None else weights
            theta = theta.positions
        flat = isinstance(theta, torch.Tensor) and theta.dim() == 2
        theta = as_batched(theta)
        self.task.check_theta(theta)
        if not torch.isfinite(theta).all():
            raise ConfigError("initial particle positions contain non-finite values")
        if generator is None:
            if seed is None and not self.deterministic:
                raise ConfigError("pass a generator or a seed: this dynamics draws random numbers "
                                  "(SGD samples or Langevin noise) and randomness lives in the state")
            generator = torch.Generator(device=theta.device).manual_seed(int(seed or 0))
        w = None
        if weights is not None:
            w = as_weights(weights, theta)                   # (1 or B, N)
            if not torch.isfinite(w).all() or (w < 0).any():
                raise ConfigError("weights must be finite and non-negative")
            if (w.sum(-1) - 1).abs().max() > 1e-6:
                raise ConfigError(f"weights must sum to 1 (per replica), got {w.sum(-1).tolist()}")
        return ParticleState((theta[0] if flat else theta).clone(), w, 0, 0.0, generator)

    def potential(self, state: ParticleState) -> Potential:
        """The drift estimate at the current positions (exact, or from a fresh batch);
        batched ([B, N], [B, N, D], [B]) whatever the state's layout."""
        theta = as_batched(state.theta)
        if self.drift == "population":
            return evaluate(self.task, theta, state.weights, backend=self.backend)
        x, y = self.task.sample(self.batch_size, generator=state.generator,
                                batch=theta.shape[0], dtype=theta.dtype,
                                device=theta.device)
        return self.task.sample_potential(theta, state.weights, x, y)

    def velocity(self, state: ParticleState, potential: Potential | None = None) -> torch.Tensor:
        """Deterministic velocity v_i = −2 ξ(t) (∇Ψ(θ_i) + λθ_i), in the state's layout
        ([B, N, D], or [N, D] for a state started from [N, D])."""
        pot = potential if potential is not None else self.potential(state)
        v = -2.0 * self.xi(state.t) * (pot.grad + self.lam * as_batched(state.theta))
        return v[0] if state.theta.dim() == 2 else v

    def step(self, state: ParticleState, *, dt: float | None = None) -> tuple[ParticleState, StepInfo]:
        """One Euler–Maruyama step; returns the new state (in the layout of ``state``) and
        what the step saw at θ_k."""
        if state.theta.dim() == 2:                          # the caller's [N, D] layout
            new, info = self.step(replace(state, theta=state.theta.unsqueeze(0)), dt=dt)
            return replace(new, theta=new.theta[0]), info
        dt = self.dt if dt is None else check_finite_float("dt", dt, positive=True)
        pot = self.potential(state)
        s = dt * self.xi(state.t)
        beta = self.beta(state.t)
        theta = state.theta - (2.0 * s) * (pot.grad + self.lam * state.theta)
        if beta != math.inf:
            if not beta > 0:
                raise ConfigError(f"beta must be > 0, got {beta} at t={state.t}")
            theta = theta + math.sqrt(4.0 * s / beta) * self._noise(state, theta)
        if not self._all_finite(theta):
            gnorm = float(pot.grad.norm(dim=-1).max())
            raise DivergenceError(
                f"step {state.step}: non-finite particle positions (max |∇Ψ| = {gnorm:.3g}, "
                f"step size 2ξdt = {2 * s:.3g}); the step size is likely too large")
        # t = Σ dt, rounded to 15 significant digits so that k·dt reads as k·dt (2.0, not 1.9999999999999998)
        new = replace(state, theta=theta, step=state.step + 1, t=float(f"{state.t + dt:.15g}"))
        return new, StepInfo(potential=pot, step_size=s, beta=beta)

    # --- hooks overridden by a sharded dynamics (dynamics.sharded) ----------------------------
    def _noise(self, state: ParticleState, theta: torch.Tensor) -> torch.Tensor:
        """ζ ~ N(0, I) of θ's shape [B, N, D] from the state's generator, drawn on the
        generator's device and moved to θ's (a CPU generator drives a CUDA run with the CPU
        run's noise)."""
        return torch.randn(theta.shape, generator=state.generator, dtype=theta.dtype,
                           device=state.generator.device).to(theta.device)

    def _all_finite(self, theta: torch.Tensor) -> bool:
        """Whether every particle position is finite."""
        return bool(torch.isfinite(theta).all())

    def run(self, state: ParticleState, steps: int, *, record_every: int | None = None,
            n_mc: int = 4096, fast: bool | None = None):
        """Advance ``steps`` steps: the way to run many steps (it takes the compiled loop
        whenever one applies).

        Returns the new state; with ``record_every = k`` the pair (state, :class:`RunRecord`)
        holding step, t and the risk R(ρ_N) per replica at the start, every k steps and at the
        end (``dynamics.record``).  The risk is exact for closed-form tasks and finite
        datasets (population drift reuses the step's own evaluation), otherwise a Monte Carlo
        estimate on ``n_mc`` samples from a generator of its own (seed 0, the same samples at
        every row): recording never draws from the state's generator, so a recorded run ends
        in exactly the state of an unrecorded one.

        ``fast`` (None: automatic) — online and minibatch SGD (drift="sgd", squared loss) on
        CPU run many steps per call in compiled code (``dynamics.fast_sgd``): the same random
        stream as ``step`` (same draws, same order, so the generator ends in the same state),
        the same trajectory up to float rounding (sums in another order; tested to 2e-5
        relative in float32 and 1e-12 in float64, ``tests/test_fast_sgd.py``), and itself
        bit-for-bit reproducible however the steps are split into calls (or recorded).
        Gradient descent and Langevin (population drift) have no compiled loop and run ``step``.
        ``fast=False`` forces the step loop; ``fast=True`` raises if the fast path is unavailable.
        ``ConfigError`` for a negative or non-integer ``steps`` or ``record_every`` < 1.
        """
        steps = check_positive_int("steps", steps, allow_zero=True)
        every = check_record_every(record_every)
        n_mc = check_positive_int("n_mc", n_mc)
        if state.theta.dim() == 2:                          # the caller's [N, D] layout
            out = self.run(replace(state, theta=state.theta.unsqueeze(0)), steps,
                           record_every=record_every, n_mc=n_mc, fast=fast)
            if every is None:
                return replace(out, theta=out.theta[0])
            return replace(out[0], theta=out[0].theta[0]), out[1]
        if every is None:
            return self._advance(state, steps, fast, want_info=False)[0]

        def measure(s):
            if self.task.has_population:
                pot = evaluate(self.task, s.theta, s.weights, backend=self.backend)
            else:
                gen = torch.Generator(device=s.theta.device).manual_seed(0)
                pot = evaluate(self.task, s.theta, s.weights, backend=self.backend, n_mc=n_mc,
                               generator=gen)
            return pot.risk, pot.risk_se

        return recorded_run(state, steps, every,
                            lambda s, k: self._advance(s, k, fast, want_info=True), measure)

    def _advance(self, state: ParticleState, steps: int, fast, *, want_info: bool):
        """(state after ``steps`` steps, (risk, se) at the start or None): the compiled loop
        when it applies, else ``step``; population drift's first step gives the exact risk
        at the start for free."""
        # --- fast online-SGD hook (meanfield.dynamics.fast_sgd) -------------------------
        if fast is not False and steps > 0 and (self.drift == "sgd" or fast):
            from . import fast_sgd

            reason = fast_sgd.unsupported(self, state)
            if reason is None:
                return fast_sgd.run(self, state, steps), None
            if fast:
                raise ConfigError(f"fast=True but the fast SGD path is unavailable: {reason}")
        # --- end of hook -----------------------------------------------------------------
        first = None
        for i in range(steps):
            state, info = self.step(state)
            if i == 0 and want_info and self.drift == "population":
                first = (info.potential.risk, info.potential.risk_se)
        return state, first


_LAM_DOC = """
    lam : float ≥ 0 — L2 strength λ: the particles minimise Ψ_λ = Ψ + (λ/2)|θ|², i.e. the
        free energy ½R + (λ/2)∫|θ|² dρ (− β⁻¹H(ρ) with noise); default 0."""
_COMMON_DOC = """
    xi : number or schedule spec — step-size schedule ξ(t), s_k = dt·ξ(t_k); default 1.
    backend : "auto" | "numpy" | "torch" | "keops" — how exact pair sums are computed.
    (:class:`ParticleDynamics` lists every keyword.)

    Returns a :class:`ParticleDynamics`: ``state = dyn.init(θ, generator=g)`` with θ [N, D],
    [B, N, D] or a ParticleMeasure (the state keeps θ's layout), then
    ``state = dyn.run(state, steps)`` (many steps, compiled where it can; with
    ``record_every=k`` it returns ``(state, record)``: step, t and risk every k steps), or
    ``state, info = dyn.step(state)`` (one step, and what it saw).
"""


def gradient_flow(task, *, dt, **kw) -> ParticleDynamics:
    """Wasserstein gradient descent on the population risk (β = ∞, no noise):

        θ_i ← θ_i − 2 dt ξ(t_k) (∇Ψ(θ_i; ρ_N) + λ θ_i),    t_{k+1} = t_k + dt,

    with the exact ∇Ψ (closed-form teacher–student, or a finite dataset's full batch: there
    one step is one full-batch SGD step with learning rate N·dt on the module of
    ``mf.to_module``).  Nothing is random: ``init`` needs no generator.

    dt : time step on the MMN time axis (t_k = k·dt).
    Keywords (optional):"""
    return ParticleDynamics(task, dt=dt, drift="population", **kw)


def langevin(task, *, dt, beta, lam=0.0, **kw) -> ParticleDynamics:
    """Mean-field Langevin dynamics (noisy gradient descent on the exact potential):

        θ_i ← θ_i − 2 s_k (∇Ψ(θ_i; ρ_N) + λ θ_i) + sqrt(4 s_k / β(t_k)) ζ_i,   ζ_i ~ N(0, I),

    s_k = dt ξ(t_k): the particle discretisation of ∂_t ρ = 2ξ∇·(ρ∇Ψ_λ) + 2ξβ⁻¹Δρ, the
    Wasserstein gradient flow of the free energy F_β(ρ) = ½R(ρ) + (λ/2)∫|θ|² dρ − β⁻¹H(ρ)
    (H the differential entropy), whose fixed points are the Gibbs measures
    ρ ∝ exp(−β Ψ_λ(·; ρ)).  Chizat (2022) writes τ = 1/β.  The experiments log F_β and H
    along a run (``free_energy`` and ``entropy`` columns of metrics.csv).

    dt : time step on the MMN time axis (t_k = k·dt).
    beta : inverse temperature β > 0 — a number (``math.inf``: no noise) or a schedule spec
        for annealing, e.g. ``"log:b0,t0"`` (β(t) = b0 log(e + t/t0)).
    lam : float ≥ 0 — L2 strength λ in Ψ_λ = Ψ + (λ/2)|θ|² (confines the Gibbs measure when
        the risk alone does not); default 0.

    Other keywords (optional):"""
    return ParticleDynamics(task, dt=dt, drift="population", beta=beta, lam=lam, **kw)


def online_sgd(task, *, eps, **kw) -> ParticleDynamics:
    """MMN's online SGD: one fresh sample (x_k, y_k) per step, step k at time t = kε,

        θ_i ← θ_i − 2 s_k (½∂_fℓ(y_k, f(x_k)) ∇_θφ(x_k; θ_i) + λ θ_i) [+ sqrt(4 s_k/β) ζ_i]

    (s_k = ε ξ(t_k); ½∂_fℓ = f − y for the squared loss).  ``beta`` (a number or a schedule)
    adds Langevin noise (noisy SGD).  On CPU, ``dyn.run`` does many steps per call in
    compiled code (squared loss).

    Keywords (optional):"""
    return ParticleDynamics(task, dt=eps, drift="sgd", batch_size=1, **kw)


def minibatch_sgd(task, *, eps, batch_size, **kw) -> ParticleDynamics:
    """SGD with ``batch_size`` fresh samples per step (with replacement from a finite
    dataset), on the same time axis as online SGD (step k at t = kε): the update of
    :func:`online_sgd` with the batch mean of ½∂_fℓ ∇_θφ.  ``beta`` adds Langevin noise.  On
    CPU, ``dyn.run`` does many steps per call in compiled code (squared loss).

    Keywords (optional):"""
    return ParticleDynamics(task, dt=eps, drift="sgd", batch_size=batch_size, **kw)


for _f in (gradient_flow, online_sgd, minibatch_sgd):
    _f.__doc__ += _LAM_DOC + _COMMON_DOC
langevin.__doc__ += _COMMON_DOC
del _f
