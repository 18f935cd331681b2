"""cb-relu2d: Chizat–Bach's 2-D ReLU picture — particles a_i|w_i| converging onto the teacher's directions.

Setting (Chizat's ``illustration_reluNN.jl``, lchizat/2019-sparse-optim-measures, checked):
d = 2; a teacher of m0 = 3 ReLU units f*(x) = (1/m0) Σ_k s_k relu(⟨w*_k, x⟩) with unit-norm
w*_k and output signs s_k = ±1 (his are sign(randn); ours alternate +, −, + so both signs
appear); n = 15 inputs uniform on the unit circle, y_k = f*(x_k); a student of m = 20
particles θ_i = (a_i, w_i) ∈ R³ drawn uniformly on the sphere of radius 2; full-batch GD,
step 1, L2 coefficient 0.002, 10⁴ iterations; he plots |a_i| w_i (his a_i|b_i|, with b the
output weight) over the iterations, coloured by the final sign of a_i.

Convention mapping (his → ours, docs/design.md §1).  His objective is
F_CB = (1/2n) Σ_k (f(x_k) − y_k)² + (λ_CB/m) Σ_i |θ_i|² = ½R + λ_CB ∫|θ|² dρ_m and his update
θ_i ← θ_i − η·m·∇_{θ_i}F_CB (the m-scaled gradient, no 1/m in ∇f).  With ∇_{θ_i}(½R(ρ_m)) =
(1/m)∇Ψ(θ_i) this is θ_i ← θ_i − η(∇Ψ(θ_i) + 2λ_CB θ_i); ours is θ_i ← θ_i − 2dt(∇Ψ + λθ_i)
on the free energy ½R + (λ/2)∫|θ|²dρ.  Hence **dt = η/2** (his η = 1 → 0.5) and
**λ = 2λ_CB** (his 0.002 → 0.004); his iteration k sits at t = k·η/2 (10⁴ → T = 5000), and his
regularised loss equals our ``free_energy`` = ½R + (λ/2)·mean|θ_i|².  The data law is the
n-point empirical measure (``FiniteDataset``: the "population" gradient is the exact
full-batch one).

Our defaults differ in two places, both measured with ``meanfield run cb-relu2d --set
n_train=N --set lam=L``: with his λ_CB = 0.002 (L = 0.004) the m = 20 runs end off the
teacher's rays — a regularisation bias: final risk 6.5·10⁻⁴ with his 15 inputs (R_# = 0.052)
and 7.9·10⁻⁴ with 100 inputs (R_# = 0.042), the free energy converged to 7 digits by t = 3000
— so we use **λ = 0.0004** (λ_CB = 0.0002) and **n = 100** inputs, with which the particles
line up on the teacher's rays (final risk 5.9·10⁻⁵).  ``teacher_seed = 9`` gives directions
at 89° (+), 124° (−) and 16° (+), at least 35° apart modulo π (most seeds put two of the three
units within 10° of collinear, a poor picture).

The failing case: with too few particles (``N_few`` = 3 = m0 by default) GD from the sphere
init can stall in a spurious configuration; we run ``replicas`` seeds for both m and report
how many end far above the m = 20 runs.  Per (m, seed): final risk R = E_n(y − f)² and free
energy; a seed "fails" when its final risk exceeds ``fail_factor`` × the largest final risk
of the m = N runs.

Defaults: N = 20, N_few = 3, 8 seeds, n = 100, dt = 0.5, λ = 0.0004, 10⁴ steps (T = 5000),
100 log-spaced snapshots.  ``scale=small`` (CI): 2000 steps, 4 seeds.  Outputs: metrics.csv (per m and
logged step: seed-mean risk, per-seed risk, seed-mean free energy), results.csv (per m and
seed: final risk, free energy, failed), particles.npz (snapshots ``snap_t``, ``theta_N<m>``
[K, S, m, 3] for each m; teacher and data arrays), figures/trajectories.png (left: m = N,
seed 0; right: the worst seed at m = N_few; the particles drawn at |a_i| w_i,
``meanfield.figures.chizat_bach.plane_coordinates``), figures/risk.png.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..seeds import derive_generator
from .. import io
from ..dynamics import gradient_flow
from ..errors import ConfigError
from ..figures import chizat_bach
from ..figures.chizat_bach import FIT, RESULTS
from ..models import FiniteDataset, Unit
from .config import TwoLayerConfig
from .particles import check_scale, scaled_task, size_phase
from .plan import Plan, snapshot_arrays

NAME = "cb-relu2d"
VIEWS = ("plane", "cloud")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=60", "log_every=20", "checkpoint_every=30", "n_snap=6")

SMALL = {"steps": 2000, "replicas": 4, "log_every": 20, "checkpoint_every": 1000, "n_snap": 40}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of cb-relu2d (see the module docstring): N = m of the well-specified runs, N_few
    the too-narrow width, m0 teacher units, n_train inputs on the unit circle, teacher_seed,
    init_radius (the init sphere in R³), lam = λ (ours: 2λ_CB), n_snap log-spaced snapshots,
    fail_factor (a seed fails above fail_factor × the worst m = N risk); ``scale=small``
    swaps in ``SMALL``."""

    scale: str = "full"
    N: int = 20
    N_few: int = 3
    d: int = 2
    m0: int = 3
    n_train: int = 100
    replicas: int = 8
    teacher_seed: int = 9
    init_radius: float = 2.0
    dt: float = 0.5
    lam: float = 0.0004
    steps: int = 10_000
    n_snap: int = 100
    fail_factor: float = 2.0
    log_every: int = 50
    save_every: int = 10_000
    checkpoint_every: int = 2500
    dtype: str = "float64"
    # output scale (models.scaled): f_α = α f, or α (f − f_0) with centred
    alpha: float = 1.0
    centred: bool = False

    _choices = {"scale": ("full", "small")}
    _presets = {"scale": {"small": SMALL}}
    _help = {"scale": "preset: full (the README's run) or small (scale=small: the tests')",
             "N": "particles m of the well-specified runs",
             "N_few": "the too-narrow width (fewer particles than the teacher needs)",
             "d": "input dimension (2: the plane)",
             "dt": "GD step (Chizat–Bach's step η is 2·dt)",
             "m0": "units of the teacher",
             "n_train": "inputs on the unit circle (the finite dataset)",
             "replicas": "independent seeds per width (replicas of one tensor)",
             "teacher_seed": "seed of the teacher's directions and of the inputs",
             "init_radius": "particles start uniform on the sphere of this radius in R³",
             "lam": "λ of the penalty (λ/2)|θ|² (Chizat–Bach's λ is λ/2)",
             "n_snap": "log-spaced snapshots over the run",
             "fail_factor": "a seed fails above fail_factor × the worst final risk at m = N",
             "alpha": "output scale α: the network trained is α f (lazy as α grows)",
             "centred": "with alpha: train α (f − f_0), the output at initialisation removed"}
    # the inputs' activations (replicas × m × n_train) and the log-spaced snapshots
    _size_terms = {"n_train": lambda c: 8 * c.n_train * (8 + 8 * c.replicas * (c.N + c.N_few)),
                   "n_snap": lambda c: 24 * c.n_snap * (1 + c.replicas * (c.N + c.N_few) * 3)}
    # snapshot steps are log-spaced up to `steps`: a longer run is a new run
    resume_mutable = ("checkpoint_every", "backend")

    def validate(self):
        """RunConfig's checks, then (``ConfigError``): d = 2; N_few, m0, n_train, n_snap ≥ 1;
        N_few < N; teacher_seed ≥ 0; init_radius, fail_factor finite and > 0; lam finite ≥ 0."""
        super().validate()
        check_scale(self)
        if self.d != 2:
            raise ConfigError(f"cb-relu2d draws particles in the plane: d must be 2, got {self.d}")
        self.check_bounds(at_least_one=("N_few", "m0", "n_train", "n_snap"))
        if self.N_few >= self.N:
            raise ConfigError(f"N_few must be < N, got N_few={self.N_few}, N={self.N}")
        self.check_bounds(nonnegative_ints=("teacher_seed",),
                          positive=("init_radius", "fail_factor"),
                          nonnegative=("lam",))

    def snapshot_steps(self) -> list[int]:
        """0 and ``n_snap`` log-spaced steps up to ``steps`` (as in Chizat's plot)."""
        k = np.unique(np.floor(np.geomspace(1, self.steps, self.n_snap)).astype(int))
        return [0] + [int(v) for v in k if v < self.steps]


def teacher_and_data(cfg: Config):
    """(teacher θ* [m0, 3], signs s [m0], inputs X [n, 2] on the unit circle, y [n])."""
    g = torch.Generator().manual_seed(cfg.teacher_seed)
    w = torch.randn(cfg.m0, 2, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=-1, keepdim=True)
    s = torch.tensor([(-1.0) ** k for k in range(cfg.m0)], dtype=torch.float64)
    X = torch.randn(cfg.n_train, 2, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=-1, keepdim=True)
    y = (s * torch.relu(X @ w.T)).mean(-1)                      # (1/m0) Σ_k s_k relu(⟨w*_k, x⟩)
    theta = torch.cat([torch.ones(cfg.m0, 1, dtype=torch.float64), w], -1)
    return theta, s, X, y


def initial_theta(cfg: Config, N: int):
    """(θ [S, N, 3] uniform on the sphere of radius init_radius, its generator derived from
    (seed, "N", N))."""
    gen = derive_generator(cfg.seed, "N", N)
    th = torch.randn(cfg.replicas, N, 3, generator=gen, dtype=torch.float64)
    th = cfg.init_radius * th / th.norm(dim=-1, keepdim=True)
    return th.to(getattr(torch, cfg.dtype)), gen


def warmup(cfg) -> None:
    """Nothing to compile (plain torch; ``meanfield sweep`` calls this before fanning out)."""


def plan(cfg: Config) -> Plan:
    """Two phases, m = N_few then m = N (seeds as replicas), full-batch GD on the n inputs
    with the free energy ½R + (λ/2)·mean|θ|² on every row; log-spaced snapshots; one thread
    (tiny systems); results: metrics.csv, results.csv, fit.json, particles.npz."""
    teacher, signs, X, y = teacher_and_data(cfg)
    task = FiniteDataset(Unit(2, "relu", output_weight=True), X, y)
    sizes = [cfg.N_few, cfg.N]
    keys = {N: f"m={N}" for N in sizes}

    def phases(shared):
        dyns = {}

        def build(N):
            theta, gen = initial_theta(cfg, N)
            dyns[N] = gradient_flow(scaled_task(cfg, task, theta), dt=cfg.dt, lam=cfg.lam,
                                    backend=cfg.backend)
            return dyns[N], dyns[N].init(theta, generator=gen)

        def energy(N):
            def free_energy(state, pot):
                if pot is None:
                    pot = dyns[N].potential(state)
                th = state.theta.double()
                F = 0.5 * pot.risk.double() + 0.5 * cfg.lam * (th * th).sum(-1).mean(-1)
                return {"free_energy": float(F.mean()),
                        **{f"free_energy_r{b}": float(v) for b, v in enumerate(F)}}
            return free_energy

        return [size_phase(keys[N], {"N": N}, lambda N=N: build(N), label=f"N={N}", extra=energy(N),
                           snapshot_steps=cfg.snapshot_steps(), kernel=True)
                for N in sizes]

    def results(ctx):
        rows = [r for N in sizes for r in ctx.done[keys[N]].rows]
        io.write_metrics(ctx.out / io.METRICS, rows)
        _write_results(cfg, ctx, {N: ctx.done[keys[N]] for N in sizes}, teacher, signs, X, y)
        return rows

    return Plan(phases=phases, results=results, primary=keys[cfg.N], threads=1,
                record={"task": task.to_dict()})


def _write_results(cfg, ctx, done, teacher, signs, X, y):
    """results.csv, fit.json and particles.npz from ``done``: {m: PhaseRecord}."""
    out = ctx.out
    sizes = [cfg.N_few, cfg.N]
    finals = {N: done[N].rows[-1] for N in sizes}
    S = cfg.replicas
    ref = max(finals[cfg.N][f"risk_r{b}"] for b in range(S))
    results = []
    for N in sizes:
        for b in range(S):
            r = finals[N][f"risk_r{b}"]
            results.append({"m": N, "seed": b, "final_risk": r,
                            "final_free_energy": finals[N][f"free_energy_r{b}"],
                            "failed": int(r > cfg.fail_factor * ref)})
    io.write_metrics(out / RESULTS, results)
    summary = {"T": cfg.steps * cfg.dt, "lam": cfg.lam, "fail_factor": cfg.fail_factor}
    for N in sizes:
        rs = np.array([finals[N][f"risk_r{b}"] for b in range(S)])
        summary[f"m{N}"] = {"median_final_risk": float(np.median(rs)), "max_final_risk": float(rs.max()),
                            "min_final_risk": float(rs.min()),
                            "failed": int(sum(r["failed"] for r in results if r["m"] == N)), "seeds": S}
    io.write_json(out / FIT, summary)
    snaps = {N: done[N].snapshot_map() for N in sizes}
    steps = sorted(snaps[cfg.N])
    arrays = snapshot_arrays(ctx.done, primary=f"m={cfg.N}")
    arrays.update({"snap_t": np.array(steps, float) * cfg.dt,
                   "param_names": np.array(["a", "w0", "w1"]), "teacher_theta": teacher.numpy(),
                   "teacher_weights": (signs / cfg.m0).numpy(), "data_X": X.numpy(), "data_Y": y.numpy()})
    for N in sizes:
        arrays[f"theta_N{N}"] = torch.stack([snaps[N][k] for k in steps]).numpy()
    io.write_npz(out / io.PARTICLES, arrays)


FIGURES = chizat_bach.relu2d_figures
