"""One particle system sharded over P processes with torch.distributed.

Rank r of P owns the particles i ∈ [lo_r, hi_r) (contiguous rows of θ [B, N, D], about N/P
each, boundaries on multiples of 8 rows).  One step of :class:`ShardedDynamics` is exactly
the Euler–Maruyama step of :class:`~meanfield.dynamics.ParticleDynamics` (docs/design.md §1)

    θ_i ← θ_i − 2 s_k (∇Ψ(θ_i; ρ_N) + λ θ_i) + sqrt(4 s_k / β(t_k)) ζ_i,   s_k = dt ξ(t_k),

computed by each rank for its own particles only:

* **pair interactions** (population drift of a closed-form task): the positions are
  all-gathered (B·N·D numbers per step) and each rank reduces its particles against all,
  ``get_backend(...).kernel_sum(kernel, unit, θ_own, θ_all, m_all)`` — N²/P pair terms per
  rank.  The task's ``population_potential`` is called on the own rows with a pair sum whose
  sources "the particles themselves" are replaced by all particles, so any task that sees
  the other particles only through its ``pair_sum`` argument shards unchanged.  The risk
  R = R_# + Σ_i m_i (Ψ_i + V_i) (docs/design.md §1) needs all rows: it is formed by :meth:`gather`
  (only on recorded steps), with the same expression as the task, so it is bitwise equal.
* **sample-based drift** (SGD batches, a finite dataset's full batch, Monte Carlo risks):
  every rank draws the same batch (x_k, y_k) from the replicated generator, computes the
  partial outputs Σ_{i own} m_i φ(x_k; θ_i) and all-reduces them into f(x_k) [B, n] — the
  only communication; then Ψ̂, ∇Ψ̂ of its own particles as in ``Task.sample_potential``.

**Random numbers.**  The generator is replicated: every rank draws the full noise
ζ [B, N, D] (and the same SGD samples) in the unsharded order and keeps its rows, so each
particle's noise, and the generator's state after every step, are those of the unsharded
run whatever P is (O(N·D) per rank, negligible beside N²/P).  Draws are made on the
generator's device (CPU for the experiments) and moved, so GPU shards see the CPU stream.

**Results.**  Pair sums are row-wise, so with the native CPU loop (float32) the sharded
trajectory is bitwise that of the unsharded one (checked in tests/test_shard.py); sums over
particles that are split across ranks (f(x_k) for SGD) agree to round-off.
:meth:`gather` returns the state (and potential) over all particles in the unsharded
format, so checkpoints are the same whatever P is.

**Failures.**  Collectives run with the process group's timeout; a failed or timed-out
collective raises :class:`ShardError`.  A divergence on any rank is agreed on by all
(one all-reduce of a flag per step), so every rank raises the same ``DivergenceError``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError, ShardError
from ..interact import get_backend
from ..models.tasks import FiniteDataset, Potential, loss_terms
from .particles import ParticleDynamics, ParticleState

ALIGN = 8   # shard boundaries on multiples of the native pair loop's largest row block


def shard_ranges(N: int, P: int, align: int = ALIGN) -> list[tuple[int, int]]:
    """Row ranges [(lo_r, hi_r)] of P shards of N particles: equal chunks of ⌈N/P⌉ rows rounded
    up to a multiple of ``align`` (the last shard takes the rest), unless that would leave
    a shard empty, then plain ⌈N/P⌉-row chunks.  Raises ConfigError when P > N."""
    if P < 1 or N < P:
        raise ConfigError(f"cannot split N={N} particles over shards={P} (need 1 <= shards <= N)")
    chunk = -(-N // P)
    aligned = -(-chunk // align) * align
    if (P - 1) * aligned < N:
        chunk = aligned
    return [(min(N, r * chunk), min(N, (r + 1) * chunk)) for r in range(P)]


class Comm:
    """Collectives over a torch.distributed process group (the default group when None),
    with counters: ``stats[op] = [calls, bytes received per rank, seconds]``.

    ``device`` is where this rank's tensors live: ``cuda:LOCAL_RANK`` for NCCL, else CPU.
    Any failure of a collective (a dead peer, a timeout) raises :class:`ShardError`."""

    def __init__(self, group=None, device=None):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("no torch.distributed process group is initialised "
                              "(use meanfield.distributed to launch sharded runs)")
        self.dist, self.group = dist, group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self.backend = str(dist.get_backend(group))
        if device is None:
            if self.backend == "nccl":
                device = torch.device("cuda", torch.cuda.current_device())
            else:
                device = torch.device("cpu")
        self.device = torch.device(device)
        self.stats: dict[str, list] = {}

    def _run(self, op: str, fn, nbytes: int, what: str):
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # gloo/NCCL raise RuntimeError (DistBackendError) subclasses
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ShardError(f"rank {self.rank} of {self.size}: {op} of {what} failed: another "
                             f"rank died or timed out ({first[:200]})") from e
        s = self.stats.setdefault(op, [0, 0, 0.0])
        s[0] += 1
        s[1] += nbytes
        s[2] += time.perf_counter() - t0
        return out

    def all_gather_rows(self, x: torch.Tensor, ranges, what: str = "rows") -> torch.Tensor:
        """Concatenate every rank's rows x [B, n_r, ...] (n_r = hi_r − lo_r) along dim 1 →
        [B, N, ...].  Shards are padded to the largest for the collective and trimmed."""
        n_max = max(hi - lo for lo, hi in ranges)
        x = x.contiguous()
        n = x.shape[1]
        if n < n_max:
            pad = x.new_zeros((x.shape[0], n_max - n) + tuple(x.shape[2:]))
            x = torch.cat([x, pad], 1)
        parts = [torch.empty_like(x) for _ in range(self.size)]
        nbytes = (self.size - 1) * x.numel() * x.element_size()
        self._run("all_gather", lambda: self.dist.all_gather(parts, x, group=self.group), nbytes, what)
        return torch.cat([p[:, :hi - lo] for p, (lo, hi) in zip(parts, ranges)], 1)

    def all_reduce_sum(self, x: torch.Tensor, what: str = "partial sums") -> torch.Tensor:
        """Σ over ranks of x (a new tensor)."""
        y = x.clone().contiguous()
        self._run("all_reduce", lambda: self.dist.all_reduce(y, group=self.group),
                  y.numel() * y.element_size(), what)
        return y

    def all_true(self, flag: bool, what: str = "a flag") -> bool:
        """Whether ``flag`` holds on every rank (one all-reduce of one number)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        op = self.dist.ReduceOp.MIN
        self._run("all_reduce", lambda: self.dist.all_reduce(t, op=op, group=self.group), 4, what)
        return bool(t.item() == 1.0)

    def broadcast_object(self, obj, src: int = 0, what: str = "an object"):
        """``obj`` of rank ``src`` on every rank (small picklable objects)."""
        box = [obj]
        self._run("broadcast", lambda: self.dist.broadcast_object_list(box, src=src, group=self.group),
                  0, what)
        return box[0]

    def barrier(self, what: str = "a barrier"):
        """Wait until every rank reaches this point (``ShardError`` when one cannot)."""
        self._run("barrier", lambda: self.dist.barrier(group=self.group), 0, what)


@dataclass
class ShardedState(ParticleState):
    """This rank's part of a :class:`ParticleState`: θ [B, n_r, D] (its rows), weights
    [1 or B, n_r] (its masses, always explicit: m_i = 1/N when the system is uniform), step,
    time and the generator (replicated: identical on every rank)."""


class ShardedDynamics(ParticleDynamics):
    """:class:`ParticleDynamics` over P ranks (see the module docstring).

    Build it from an unsharded dynamics and a :class:`Comm`; :meth:`scatter` (or
    :meth:`init`) gives this rank's :class:`ShardedState`; :meth:`step` advances it;
    :meth:`gather` returns the whole system.  Every method that communicates must be called
    by all ranks in the same order.

    Example (under ``torchrun --nproc-per-node P``, after ``dist.init_process_group``)::

        sdyn = ShardedDynamics(mf.gradient_flow(task, dt=0.2), Comm())
        state = sdyn.init(rho0, generator=g)          # this rank's particles
        for _ in range(500):
            state, info = sdyn.step(state)            # N²/P pair terms on this rank
        full, _ = sdyn.gather(state)                  # θ [B, N, D] on every rank
    """

    def __init__(self, dynamics: ParticleDynamics, comm: Comm):
        if isinstance(dynamics, ShardedDynamics) or not isinstance(dynamics, ParticleDynamics):
            raise ConfigError(f"ShardedDynamics wraps a ParticleDynamics, got {type(dynamics).__name__}")
        self.__dict__.update(dynamics.__dict__)       # task, dt, drift, schedules, backend, …
        self.comm = comm
        self.N = None
        self.ranges = None
        self._gathered = None                         # (θ_own, θ_all) of the last gather

    # ---- the layout -------------------------------------------------------------------
    @property
    def rows(self) -> tuple[int, int]:
        """(lo, hi): this rank's particle rows."""
        return self.ranges[self.comm.rank]

    def scatter(self, state: ParticleState) -> ShardedState:
        """This rank's shard of a whole-system state (θ [B, N, D], the same on every rank);
        fixes the layout (N, row ranges, masses) of this dynamics."""
        if isinstance(state, ShardedState):
            return state
        if state.theta.dim() == 2:                                    # a state started from [N, D]
            state = replace(state, theta=state.theta.unsqueeze(0))
        N = state.theta.shape[-2]
        self.N = N
        self.ranges = shard_ranges(N, self.comm.size)
        dev = self.comm.device
        self.uniform = state.weights is None
        self.m_all = state.masses.to(dev)                            # (1 or B, N)
        lo, hi = self.rows
        self._gathered = None
        return ShardedState(state.theta[:, lo:hi].to(dev).clone(), self.m_all[:, lo:hi].clone(),
                            state.step, state.t, state.generator)

    def init(self, theta, *, generator=None, seed=None, weights=None) -> ShardedState:
        """As :meth:`ParticleDynamics.init` (the whole θ on every rank), then this rank's shard."""
        return self.scatter(super().init(theta, generator=generator, seed=seed, weights=weights))

    def _check(self, state):
        if not isinstance(state, ShardedState) or self.ranges is None:
            raise ConfigError("a ShardedDynamics steps a ShardedState (from scatter() or init())")

    # ---- communication -------------------------------------------------------------------
    def _theta_all(self, state: ShardedState) -> torch.Tensor:
        """θ [B, N, D] of all ranks (one all-gather, reused for the same state)."""
        if self._gathered is not None and self._gathered[0] is state.theta:
            return self._gathered[1]
        full = self.comm.all_gather_rows(state.theta, self.ranges, "particle positions")
        self._gathered = (state.theta, full)
        return full

    def gather(self, state, potential: Potential | None = None):
        """(whole-system :class:`ParticleState`, whole-system :class:`Potential` or None) on
        every rank.  The state is in the unsharded format (θ [B, N, D], weights None when
        uniform); the potential's Ψ, ∇Ψ, V are gathered rows and its risk, when the own-row
        potential has none, is R = R_# + Σ_i m_i (Ψ_i + V_i) over all particles."""
        if not isinstance(state, ShardedState):
            return state, potential
        self._check(state)
        theta = self._theta_all(state)
        full = ParticleState(theta, None if self.uniform else self.m_all, state.step, state.t,
                             state.generator)
        if potential is None:
            return full, None
        pot = potential
        D = pot.grad.shape[-1]
        cols = [pot.grad, pot.psi.unsqueeze(-1)] + ([pot.V.unsqueeze(-1)] if pot.V is not None else [])
        allp = self.comm.all_gather_rows(torch.cat(cols, -1), self.ranges, "potentials")
        grad, psi = allp[..., :D], allp[..., D]
        V = allp[..., D + 1] if pot.V is not None else None
        risk = pot.risk
        if risk is None:
            risk = self.task.risk_sharp + ((psi + V) * self.m_all).sum(-1)
        return full, Potential(psi=psi, grad=grad, risk=risk, risk_se=pot.risk_se, V=V)

    # ---- the drift on this rank's particles --------------------------------------------------
    def potential(self, state: ShardedState) -> Potential:
        """Ψ, ∇Ψ (and V) of this rank's particles [B, n_r(, D)] — exact, or from a fresh
        batch drawn as in the unsharded step.  The risk is None for pair-interaction
        potentials (it needs all rows: :meth:`gather`); sample-based ones carry it."""
        self._check(state)
        if self.drift == "population":
            return self._exact(state)
        x, y = self._draw(self.batch_size, state.generator, state.theta)
        return self._sampled(state, x, y)

    def evaluate(self, state: ShardedState, *, n_mc: int | None = None,
                 generator: torch.Generator | None = None) -> Potential:
        """What ``interact.evaluate`` gives for the whole system, on this rank's rows: exact
        when the task has a population potential, else a Monte Carlo estimate from ``n_mc``
        samples of ``generator`` (the same draws on every rank)."""
        self._check(state)
        if self.task.has_population:
            return self._exact(state)
        if n_mc is None or generator is None:
            raise ConfigError(f"task {self.task.name!r} has no exact population potential; "
                              "pass n_mc and a generator for a Monte Carlo estimate")
        return self._sampled(state, *self._draw(n_mc, generator, state.theta))

    def _draw(self, n, generator, theta):
        """(x [B, n, d], y [B, n]) from ``task.sample`` on the generator's device (the
        unsharded draws), moved to θ's device."""
        x, y = self.task.sample(n, generator=generator, batch=theta.shape[0], dtype=theta.dtype,
                                device=generator.device)
        return x.to(theta.device), y.to(theta.device)

    def _exact(self, state: ShardedState) -> Potential:
        task = self.task
        if isinstance(task, FiniteDataset):                   # the full batch: a sample sum
            pot = self._sampled(state, *task.full(state.theta.dtype, state.theta.device))
            pot.risk_se = None
            return pot
        own = state.theta
        theta_all = self._theta_all(state)
        backend, N = self.backend, self.N

        def pair_sum(kernel, unit, x, y, c, grad=True):
            n = x.shape[-2]
            if x is own:
                n = N                                          # choose the backend as unsharded
            if y is own:                                       # sources = the particles: all of them
                y, c = theta_all, self.m_all
            be = get_backend(backend, N=n, M=y.shape[-2], d=unit.d, device=x.device)
            return be.kernel_sum(kernel, unit, x, y, c, grad=grad)

        pot = task.population_potential(own, state.weights, pair_sum)
        if pot.V is None:
            raise ConfigError(f"task {task.name!r} cannot be sharded: its population potential "
                              "does not report V (needed for the risk R = R_# + Σ m (Ψ + V))")
        return replace(pot, risk=None)

    def _sampled(self, state: ShardedState, x, y) -> Potential:
        """``Task.sample_potential`` with f(x_k) = Σ_i m_i φ(x_k; θ_i) summed over ranks:
        Ψ̂_i = (1/n) Σ_k r_k φ(x_k; θ_i), ∇Ψ̂ likewise, R̂ = (1/n) Σ_k ℓ(y_k, f(x_k)), with
        r_k = ½∂_fℓ (f(x_k) − y_k for the squared loss; ``models.tasks.loss_terms``)."""
        unit, theta, m = self.task.unit, state.theta, state.weights
        n = x.shape[-2]
        phi = unit(x, theta)                                        # (B, n, n_r)
        f = (phi @ m.unsqueeze(-1)).squeeze(-1)                     # (B, n), this rank's part
        f = self.comm.all_reduce_sum(f, "network outputs f(x_k)")   # (B, n)
        r, ell = loss_terms(self.task.loss, f, y)                   # (B, n): ½∂_fℓ, ℓ
        psi = (r.unsqueeze(-2) @ phi).squeeze(-2) / n               # (B, n_r)
        grad = unit.weighted_grad(x, theta, r / n)                  # (B, n_r, D)
        risk = ell.mean(-1)
        se = ell.std(-1) / math.sqrt(n) if n > 1 else torch.full_like(risk, float("nan"))
        return Potential(psi=psi, grad=grad, risk=risk, risk_se=se)

    # ---- hooks of ParticleDynamics.step ------------------------------------------------------
    def _noise(self, state, theta):
        """The unsharded draw ζ [B, N, D] (on the generator's device); this rank's rows."""
        lo, hi = self.rows
        full = torch.randn((theta.shape[0], self.N, theta.shape[-1]), generator=state.generator,
                           dtype=theta.dtype, device=state.generator.device)
        return full[:, lo:hi].to(theta.device)

    def _all_finite(self, theta) -> bool:
        return self.comm.all_true(bool(torch.isfinite(theta).all()), "the divergence check")

    def step(self, state, *, dt=None):
        self._check(state)
        return super().step(state, dt=dt)

    def run(self, state, steps: int, *, record_every: int | None = None, fast: bool | None = None,
            **kw):
        """Advance ``steps`` steps by the step loop (the compiled online-SGD path is
        single-process; ``fast=True`` raises; so does ``record_every``: a rank holds only its
        shard, record the whole system through the runner)."""
        if fast:
            raise ConfigError("fast=True but the fast SGD path is single-process; "
                              "sharded dynamics use the step loop")
        if record_every is not None:
            raise ConfigError("record_every is not available on a sharded dynamics (a rank "
                              "holds only its shard); record through the runner")
        return super().run(state, steps, fast=False, **kw)


def shard(dynamics: ParticleDynamics, state: ParticleState, comm: Comm):
    """(ShardedDynamics, this rank's ShardedState) from an unsharded dynamics and a
    whole-system state (the same on every rank)."""
    sdyn = ShardedDynamics(dynamics, comm)
    return sdyn, sdyn.scatter(state)


__all__ = ["ALIGN", "Comm", "ShardError", "ShardedDynamics", "ShardedState", "shard", "shard_ranges"]
