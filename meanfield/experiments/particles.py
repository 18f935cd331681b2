"""Pieces shared by the particle experiments: the standard metrics row of a particle system
and the phase of one recorded simulation (run by ``meanfield.runner``).

:func:`measure_row` measures θ_k: the risk (exact when the task has a closed form, else a
Monte Carlo estimate with its standard error), the squared velocity norm ‖v‖²_{L²(ρ_N)} of
the population flow and the empirical PL ratio ‖v‖² / (R − R_∞) (docs/design.md §1), and for
noisy runs (β < ∞) with an exact risk the entropy estimate and the free energy
F_β = ½R + (λ/2)∫|θ|² dρ − β⁻¹H (the Langevin dynamics' Lyapunov functional); with a
sharded dynamics (``dynamics.sharded``) it measures this rank's particles and gathers the
whole system, so rows have the unsharded format.  :func:`simulation_phase` is the phase
of a run that advances one ``ParticleDynamics`` for ``cfg.steps`` steps; :func:`size_phase`
the phase of one system of a multi-size run (one N, one width m, one temperature …);
:func:`relu_warmup` the sweep warm-up of the ReLU teacher-student experiments (n-scaling,
cb-threshold).  Runs on a finite dataset also record the tangent kernel's spectrum, change and
Rayleigh quotient (:func:`kernel_columns`); :func:`scaled_task` puts a task at the config's
output scale α (``models.scaled``).
"""
from __future__ import annotations

import math

import torch

from ..seeds import derive_generator
from ..diagnostics import initial_kernel, kernel_row, knn_entropy, velocity_sq_norm
from ..dynamics.sharded import ShardedDynamics
from ..errors import ConfigError, DivergenceError
from ..interact import evaluate
from ..models import FiniteDataset, TeacherStudent, Unit
from ..models.scaled import ScaledTask, scaled
from .plan import Phase


def measure_row(dyn, state, pot, eval_gen, n_mc: int, risk_inf: float | None) -> dict:
    """{"risk", ["risk_se"], ["velocity_sq", "pl_ratio"], ["risk_r<b>" per replica],
    ["entropy", "free_energy" of a noisy run, :func:`free_energy_row`]} at θ_k.

    ``pot`` is the step's own potential at θ_k (population drift) or None (measured afresh;
    Monte Carlo on ``n_mc`` samples from ``eval_gen`` when the task has no closed form).
    risk_se = sqrt(mean_b se_b²)/sqrt(B).  pl_ratio = mean_b ‖v_b‖²/(R_b − risk_inf), only
    when ``risk_inf`` is given.  DivergenceError on a non-finite risk or velocity."""
    task = dyn.task
    if isinstance(dyn, ShardedDynamics):      # this rank's particles, then the whole system
        if pot is None or dyn.drift != "population":
            pot = dyn.evaluate(state, n_mc=n_mc, generator=eval_gen)
        state, pot = dyn.gather(state, pot)
    elif pot is None or dyn.drift != "population":
        if task.has_population:
            pot = evaluate(task, state.theta, state.weights, backend=dyn.backend)
        else:
            pot = evaluate(task, state.theta, state.weights, n_mc=n_mc, generator=eval_gen)
    risk = pot.risk.double()
    row = {"risk": float(risk.mean())}
    if pot.risk_se is not None:
        row["risk_se"] = float((pot.risk_se.double() ** 2).mean().sqrt() / math.sqrt(len(risk)))
    if task.has_population:
        v = dyn.velocity(state, pot)
        v2 = velocity_sq_norm(v, state.weights).double()
        row["velocity_sq"] = float(v2.mean())
        if risk_inf is not None:
            row["pl_ratio"] = float((v2 / (risk - risk_inf)).mean())
    if len(risk) > 1:
        row.update({f"risk_r{r}": float(x) for r, x in enumerate(risk)})
    row.update(free_energy_row(dyn, state, risk))
    if not all(math.isfinite(v) for k, v in row.items() if isinstance(v, float) and k != "pl_ratio"):
        raise DivergenceError(f"step {state.step}: non-finite risk or velocity "
                              f"(risk={row['risk']:.3g}); the step size is likely too large")
    return row


ENTROPY_MAX_N = 20_000     # particles per replica up to which noisy rows carry Ĥ and F_β


def free_energy_row(dyn, state, risk) -> dict:
    """{"entropy", "free_energy"} of a noisy run with an exact risk, else {}: when β(t_k) < ∞
    and the task has a population risk, the Kozachenko–Leonenko estimate Ĥ of the particles'
    differential entropy (``diagnostics.knn_entropy``, k = 1, over all D coordinates) and the
    free energy the Langevin dynamics decreases (docs/design.md §1),

        F_β = ½R + (λ/2) Σ_i m_i |θ_i|² − β(t_k)⁻¹ Ĥ,

    seed means over replicas.  Needs 2 ≤ N ≤ ``ENTROPY_MAX_N`` distinct particles (else {}:
    the k-d tree's nearest neighbours cost up to O(N²) in high dimension, on every row)."""
    beta = dyn.beta(state.t)
    if (beta == math.inf or not dyn.task.has_population
            or not 2 <= state.theta.shape[-2] <= ENTROPY_MAX_N):
        return {}
    th = state.theta if state.theta.dim() == 3 else state.theta.unsqueeze(0)
    try:
        H = torch.as_tensor(knn_entropy(th.detach().double().cpu()), dtype=torch.float64)
    except ConfigError:                                 # coincident particles: Ĥ = −∞
        return {}
    m = state.masses.double().to(th.device)
    sq = ((th.double() ** 2).sum(-1) * m).sum(-1).cpu()                 # (B,)
    F = 0.5 * risk.double().cpu() + 0.5 * dyn.lam * sq - H / beta
    return {"entropy": float(H.mean()), "free_energy": float(F.mean())}


def whole(dyn, state):
    """The state of the whole system: ``state`` itself, or gathered from every rank when
    ``dyn`` is sharded (a collective: every rank must call it)."""
    return dyn.gather(state)[0] if isinstance(dyn, ShardedDynamics) else state


def simulation_phase(cfg, build, *, n_mc: int, risk_inf: float | None, extra=None,
                     chunked: bool = False, key: str = "main", generators: dict | None = None) -> Phase:
    """The phase of one particle simulation: ``build() -> (dynamics, state)``; rows by
    :func:`measure_row` (Monte Carlo samples from a generator derived from (cfg.seed,
    "eval"), checkpointed with the phase) plus ``extra(whole state) -> dict``; snapshots
    every ``cfg.save_every`` steps; ``chunked``: advance with ``dynamics.run`` between
    recording points (the compiled online-SGD path); ``generators``: more named generators
    that ``extra`` draws from, checkpointed with the phase."""
    eval_gen = derive_generator(cfg.seed, "eval")
    build, kernel = watch_kernel(build)

    def measure(dyn, state, pot):
        row = measure_row(dyn, state, pot, eval_gen, n_mc, risk_inf)
        if extra is not None or kernel:
            st = whole(dyn, state)
            if extra is not None:
                row.update(extra(st))
            row.update(kernel_columns(dyn.task, st, kernel))
        return row

    return Phase(key=key, build=build, measure=measure, chunked=chunked,
                 generators={"eval": eval_gen, **(generators or {})})


def has_kernel_columns(task) -> bool:
    """Whether a run of ``task`` records the tangent-kernel columns: a finite dataset, at any
    output scale (``models.scaled``)."""
    inner = task.inner if isinstance(task, ScaledTask) else task
    return isinstance(inner, FiniteDataset)


def watch_kernel(build):
    """(``build`` that also keeps the initial tangent kernel K_0 of a finite-dataset run,
    the dict holding it under "K0"): the reference of the ``ntk_change`` column, recomputed
    from the deterministic initial state whenever the runner builds the phase (resume too)."""
    box: dict = {}

    def built():
        dyn, state = build()
        if has_kernel_columns(dyn.task):
            box["K0"] = initial_kernel(dyn.task, state.theta, state.weights)
        return dyn, state

    return built, box


def kernel_columns(task, state, box) -> dict:
    """The tangent-kernel columns of a row (``diagnostics.kernel_row``: ntk_lam_min,
    ntk_lam_max, ntk_rayleigh, ntk_change) as seed means, with ``<name>_r<b>`` per replica
    when there are several; {} for a run that records none."""
    if "K0" not in box or not has_kernel_columns(task):
        return {}
    row = {}
    for k, v in kernel_row(task, state.theta, state.weights, box["K0"]).items():
        row[k] = float(v.mean())
        if len(v) > 1:
            row.update({f"{k}_r{b}": float(x) for b, x in enumerate(v)})
    return row


def size_row(label, state, risk, extra=None, per_replica: bool = True) -> dict:
    """Row entries of one system of a multi-size run: {"risk": seed mean, "risk_r<b>" per
    replica when ``per_replica``, **extra}; DivergenceError naming ``label`` on a
    non-finite risk [B]."""
    r = risk.double()
    if not torch.isfinite(r).all():
        raise DivergenceError(f"{label}, step {state.step}: non-finite risk; the step size is likely too large")
    row = {"risk": float(r.mean())}
    if per_replica:
        row.update({f"risk_r{b}": float(x) for b, x in enumerate(r)})
    row.update(extra or {})
    return row


def size_phase(key: str, columns: dict, build, *, label: str, extra=None, final=None,
               per_replica: bool = True, snapshot_steps=(0,), kernel: bool = False) -> Phase:
    """The phase of one system of a multi-size run (one N, one width m, one temperature …)
    under population dynamics: rows by :func:`size_row` from the step's own potential
    (``extra(state, potential or None) -> dict`` adds columns); the final row's risk from
    ``final(state) -> (risk [B], {entries kept in the phase's result})`` (e.g. a float64
    re-evaluation), else from the dynamics' potential; snapshots at ``snapshot_steps`` (None:
    every ``save_every`` steps) and at the end; ``kernel``: the tangent-kernel columns of a
    finite-dataset run (:func:`kernel_columns`)."""
    kept: dict = {}
    box: dict = {}
    if kernel:
        build, box = watch_kernel(build)

    def measure(dyn, st, pot):
        if pot is None:
            pot = dyn.potential(st)
        row = size_row(label, st, pot.risk, extra(st, pot) if extra else None, per_replica)
        return {**row, **kernel_columns(dyn.task, st, box)} if box else row

    def measure_last(dyn, st):
        if final is not None:
            risk, more = final(st)
            kept.update(more)
        else:
            risk = dyn.potential(st).risk
        row = size_row(label, st, risk, extra(st, None) if extra else None, per_replica)
        return {**row, **kernel_columns(dyn.task, st, box)} if box else row

    return Phase(key=key, build=build, measure=measure, measure_last=measure_last,
                 columns=columns,
                 snapshot_steps=None if snapshot_steps is None else tuple(snapshot_steps),
                 finish=lambda dyn, st, record: dict(kept))


def relu_warmup(cfg) -> None:
    """Compile the pair-sum code a ReLU teacher-student run of ``cfg`` uses (native loop or
    KeOps formula for the ReLU kernel in cfg.dtype, d = cfg.d, on cfg.backend) on a tiny
    teacher-student, without the real teacher's R_# (``meanfield sweep`` calls an
    experiment's ``warmup`` in the parent before fanning out)."""
    g = torch.Generator().manual_seed(0)
    unit = Unit(cfg.d, "relu", output_weight=True)
    task = TeacherStudent.random(unit, 2, generator=g)
    theta = torch.randn(1, 8, unit.D, generator=g, dtype=torch.float64).to(getattr(torch, cfg.dtype))
    evaluate(task, theta, backend=cfg.backend)


def check_scale(cfg) -> None:
    """ConfigError unless the config's output scale ``alpha`` is finite and > 0."""
    if not (math.isfinite(cfg.alpha) and cfg.alpha > 0):
        raise ConfigError(f"alpha must be a finite number > 0, got {cfg.alpha}")


def scaled_task(cfg, task, theta0):
    """``task`` at the config's output scale: f_α = α f, or α (f − f(·; ρ_0)) with
    ``centred`` (θ_0 [B, N, D] the run's initial particles; ``models.scaled``); the task
    itself at α = 1 without centring (today's flow, bit for bit)."""
    return scaled(task, cfg.alpha, reference=theta0 if cfg.centred else None)


def dtype_of(cfg) -> torch.dtype:
    """The torch dtype named by ``cfg.dtype``."""
    return getattr(torch, cfg.dtype)
