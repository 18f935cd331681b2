"""lazy-vs-meanfield: one network from feature learning to lazy training as its output scale α grows.

Chizat–Oyallon–Bach (NeurIPS 2019, "On lazy training in differentiable programming", their
2-D two-layer ReLU experiment) and Geiger–Spigler–Jacot–Wyart (J. Stat. Mech. 2020): the same
two-layer ReLU network, trained at output scale α on R(f_α)/α² with f_α = α (f − f_0)
(``models.scaled``), learns features at small α (the particles travel to the teacher's
directions) and trains lazily at large α (they barely move, the network follows its
linearisation around the initialisation, and the test risk is worse).

Task: a 2-D ReLU teacher f*(x) = (1/m0) Σ_k s_k relu(⟨w*_k, x⟩) with unit-norm w*_k and signs
s_k = ±1 (as cb-relu2d), ``n_train`` training inputs and ``n_test`` held-out ones on the unit
circle.  Student: units a σ(⟨w, x⟩) (σ = ``activation``: relu, or a smooth erf or tanh),
θ = (a, w) ∈ R³, N particles from a symmetric
initialisation (N/2 draws θ ~ N(0, init_std² I_3), each with its mirror a → −a, so f_0 = 0
and no centring is needed; ``init = "centred"`` draws N and subtracts f(·; ρ_0) instead).
Full-batch gradient descent on the time axis of docs/design.md §1, ``steps`` steps of
dt·min(1, α): at α < 1 the particles move 1/α faster, and in the mean-field coordinates
θ̃ = √α θ (2-homogeneous units) every α covers the same time steps·dt.  Every (N, α) runs
the flow and its linearisation side by side (``dynamics.linearized.PairedDynamics``),
the ``replicas`` seeds as replicas of one tensor.

Rows (every ``log_every`` steps; per-seed arrays in the records, seed means in
metrics.csv): train and test risk R(f_α) of the flow and of the linearised flow, lin_gap =
the RMS over train and test inputs of f_α − f_lin,α, displacement = mean_j |θ_j − θ_{0,j}|,
and on the training inputs the tangent kernel's relative change ‖K_t − K_0‖_F/‖K_0‖_F,
λ_min and λ_max of (1/n)K_t and the Rayleigh quotient q_t of (1/n)K_t along the residual
(R(t) ≤ R(0) exp(−4 ∫ q), Robin–Scaman–Lelarge); the last row adds W2(ρ_T, ρ_0) (POT).

Results: summary.csv (per N and α: seed means with 95 % bootstrap intervals), fit.json
(``analysis.lazy``: the displacement and linearisation slopes in α on α ≥ 10 per N, the
crossover α*(N) where the kernel change at T falls to ``kernel_level`` with its slope in N,
prediction 0 here and −½ in Geiger et al.'s α_G = α/√N), particles.npz (the snapshots of
the largest N at the smallest and largest α), figures (``figures.lazy``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import io
from ..analysis import lazy
from ..diagnostics import kernel_change, kernel_rayleigh, kernel_spectrum, w2
from ..dynamics import gradient_flow
from ..dynamics.linearized import PairedDynamics
from ..errors import ConfigError
from ..figures import lazy as lazy_figures
from ..models import FiniteDataset, Unit
from ..models.ntk import tangent_kernel
from ..models.scaled import ScaledTask, symmetric
from ..seeds import derive_generator
from .config import TwoLayerConfig, parse_floats, parse_ints
from .plan import Phase, Plan, flat_row, snapshot_arrays

NAME = "lazy-vs-meanfield"
VIEWS = ("plane", "cloud")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "widths=4,8,16", "alphas=0.1,1,10,100", "steps=40", "log_every=20",
        "save_every=20", "checkpoint_every=20", "n_test=50", "n_boot=100")
SMALL = {"widths": "8,16,32", "alphas": "0.01,0.1,1,10,100,1000", "steps": 400, "dt": 0.1,
         "replicas": 3, "log_every": 100, "save_every": 100, "checkpoint_every": 400, "n_train": 16,
         "n_test": 100}


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of lazy-vs-meanfield (module docstring): the widths N and scales α swept, the
    teacher (m0 units, teacher_seed), n_train/n_test inputs, the student's activation, the
    initial law (init_std, init: symmetric | centred), the crossover level of the kernel
    change, bootstrap size.
    ``N`` is the largest width (set from ``widths``).  ``scale=small``: 3 widths up to 32,
    400 steps, 3 seeds."""

    scale: str = "full"
    N: int = 1024
    d: int = 2
    widths: str = "16,64,256,1024"
    alphas: str = "0.01,0.1,0.3,1,3,10,30,100,1000"
    m0: int = 3
    teacher_seed: int = 9
    n_train: int = 32
    n_test: int = 400
    activation: str = "relu"
    init: str = "symmetric"
    init_std: float = 1.0
    kernel_level: float = 0.1
    n_boot: int = 1000
    steps: int = 8000
    dt: float = 0.25
    replicas: int = 4
    log_every: int = 200
    save_every: int = 200
    checkpoint_every: int = 2000
    dtype: str = "float64"
    backend: str = "torch"

    _choices = {"scale": ("full", "small"), "init": ("symmetric", "centred"),
                "activation": ("relu", "erf", "tanh")}
    _presets = {"scale": {"small": SMALL}}
    resume_mutable = ("checkpoint_every",)
    _help = {"scale": "preset: full (the README's run) or small (scale=small: 3 widths up to 32)",
             "N": "the largest width (set from widths)",
             "d": "2: units in the plane",
             "dt": "GD step (dt·min(1, α) at scale α)",
             "replicas": "independent seeds (replicas of one tensor)",
             "widths": "the widths N swept, comma-separated (even for a symmetric init)",
             "alphas": "the output scales α swept, comma-separated, increasing",
             "m0": "units of the teacher",
             "teacher_seed": "seed of the teacher's directions and of the inputs",
             "n_train": "training inputs on the unit circle",
             "n_test": "held-out inputs on the unit circle",
             "activation": "σ of the student's units: relu, erf or tanh",
             "init": "symmetric (mirrored pairs: f_0 = 0) or centred (f − f_0)",
             "init_std": "initial θ ~ N(0, init_std² I_3)",
             "kernel_level": "the crossover α*: the kernel's relative change at T falls to this",
             "n_boot": "bootstrap resamples of the intervals"}
    _size_terms = {"n_boot": lambda c: 32 * c.n_boot * c.replicas}

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): d = 2; widths increasing, even for
        a symmetric init, at least 3; alphas > 0, at least 2; m0, n_train, n_test ≥ 1;
        kernel_level, init_std finite and > 0; n_boot ≥ 100; replicas ≥ 2."""
        super().validate()
        if self.d != 2:
            raise ConfigError(f"lazy-vs-meanfield draws units in the plane: d must be 2, got {self.d}")
        ws = parse_ints("widths", self.widths)
        if len(ws) < 3 or (self.init == "symmetric" and any(w % 2 for w in ws)):
            raise ConfigError(f"widths must hold at least 3 values, even for a symmetric init, got {self.widths!r}")
        if len(parse_floats("alphas", self.alphas)) < 2 or parse_floats("alphas", self.alphas) != sorted(
                set(parse_floats("alphas", self.alphas))):
            raise ConfigError(f"alphas must hold at least 2 increasing values, got {self.alphas!r}")
        self.check_bounds(at_least_one=("m0", "n_train", "n_test"), nonnegative_ints=("teacher_seed",),
                          positive=("kernel_level", "init_std"))
        if self.n_boot < 100 or self.replicas < 2:
            raise ConfigError(f"n_boot must be >= 100 and replicas (seeds) >= 2, got {self.n_boot}, {self.replicas}")

    def memory_bytes(self) -> int:
        """The largest width's particles (TwoLayerConfig's estimate at N = max width) plus the
        kernels on the training inputs (replicas × n_train² × a few) and the test features."""
        big = max(parse_ints("widths", self.widths))
        base = TwoLayerConfig.memory_bytes(self.__class__.from_mapping({**self.to_dict(), "N": big}))
        return int(2 * base + 8 * self.replicas * (4 * self.n_train ** 2 + 2 * self.n_test * big))


def teacher_and_data(cfg: Config):
    """(teacher θ* [m0, 3], weights s/m0 [m0], X [n_train, 2], y, X_test [n_test, 2], y_test),
    inputs uniform on the unit circle."""
    g = torch.Generator().manual_seed(cfg.teacher_seed)
    w = torch.randn(cfg.m0, 2, generator=g, dtype=torch.float64)
    w = w / w.norm(dim=-1, keepdim=True)
    s = torch.tensor([(-1.0) ** k for k in range(cfg.m0)], dtype=torch.float64) / cfg.m0
    ang = 2 * math.pi * torch.rand(cfg.n_train + cfg.n_test, generator=g, dtype=torch.float64)
    X = torch.stack([ang.cos(), ang.sin()], -1)
    y = torch.relu(X @ w.T) @ s
    teacher = torch.cat([torch.ones(cfg.m0, 1, dtype=torch.float64), w], -1)
    n = cfg.n_train
    return teacher, s, X[:n], y[:n], X[n:], y[n:]


def initial_theta(cfg: Config, unit: Unit, N: int) -> torch.Tensor:
    """θ_0 [S, N, 3]: N/2 Gaussian draws and their mirrors (symmetric), or N draws (centred);
    the same draws for every α (generator derived from (seed, "N", N))."""
    g = derive_generator(cfg.seed, "N", N)
    half = N // 2 if cfg.init == "symmetric" else N
    th = cfg.init_std * torch.randn(cfg.replicas, half, unit.D, generator=g, dtype=torch.float64)
    return (symmetric(th, unit) if cfg.init == "symmetric" else th).to(getattr(torch, cfg.dtype))


def plan(cfg: Config) -> Plan:
    """One phase per (N, α): the paired flow and linearised flow of the scaled task; rows by
    :func:`_measure`; snapshots of the flow's particles for the largest N at the extreme α."""
    unit = Unit(2, cfg.activation, output_weight=True)
    teacher, s, X, y, Xt, yt = teacher_and_data(cfg)
    train, test = FiniteDataset(unit, X, y), FiniteDataset(unit, Xt, yt)
    widths, alphas = parse_ints("widths", cfg.widths), parse_floats("alphas", cfg.alphas)
    keys = {(N, a): f"N={N}/alpha={a:g}" for N in widths for a in alphas}
    shown = {(widths[-1], alphas[0]), (widths[-1], alphas[-1])}

    def phase(N, a):
        box = {}

        def build():
            th0 = initial_theta(cfg, unit, N)
            # the class, not the α = 1 shortcut: the rows read its scaled_outputs at every α
            dyn = gradient_flow(ScaledTask(train, a, th0 if cfg.init == "centred" else None),
                                dt=cfg.dt * min(1.0, a), backend=cfg.backend)
            pair = PairedDynamics(dyn, th0)
            box.update(pair=pair, th0=th0, K0=tangent_kernel(unit, th0, X))
            return pair, pair.init(th0)

        return Phase(key=keys[(N, a)], build=build, columns={"N": N, "alpha": a},
                     measure=lambda dyn, st, pot: _measure(box, st, a, train, test),
                     measure_last=lambda dyn, st: {**_measure(box, st, a, train, test),
                                                   "w2": _w2(box, st)},
                     save_every=cfg.save_every if (N, a) in shown else 0, snapshots=(N, a) in shown,
                     snapshot=lambda st, N=N: st.theta[..., :N, :].detach().cpu().clone(),
                     extendable=False)

    def results(ctx):
        rows = [flat_row(r) for r in ctx.rows]                  # seed means
        io.write_metrics(ctx.out / io.METRICS, rows)
        finals = {na: ctx.done[k].rows[-1] for na, k in keys.items()}
        sups = {na: np.max([r["lin_gap"] for r in ctx.done[k].rows], 0) for na, k in keys.items()}
        summary, fit = lazy.summarise(widths, alphas, finals, sups, level=cfg.kernel_level,
                                      n_boot=cfg.n_boot, seed=cfg.seed)
        io.write_metrics(ctx.out / lazy_figures.SUMMARY, summary)
        io.write_json(ctx.out / lazy_figures.FIT, {**fit, "T": cfg.steps * cfg.dt,
                                                    "dt_by_alpha": [cfg.dt * min(1.0, a) for a in alphas],
                                                    "init": cfg.init})
        arrays = snapshot_arrays(ctx.done, primary=keys[(widths[-1], alphas[0])])
        arrays.update({"param_names": np.array(unit.param_names), "teacher_theta": teacher.numpy(),
                       "teacher_weights": s.numpy(), "data_X": X.numpy(), "data_Y": y.numpy(),
                       "alphas": np.array(alphas), "widths": np.array(widths)})
        io.write_npz(ctx.out / io.PARTICLES, arrays)
        return rows

    return Plan(phases=lambda shared: [phase(N, a) for N in widths for a in alphas], results=results,
                primary=keys[(widths[-1], alphas[0])], threads=1,
                record={"task": train.to_dict(), "test": test.to_dict()})


def _measure(box, state, alpha, train, test) -> dict:
    """The row of a paired state (module docstring): per-seed arrays [S]."""
    pair = box["pair"]
    flow, lin = pair.halves(state)
    with torch.no_grad():
        out = {}
        gaps = []
        for name, task in (("", train), ("test_", test)):
            x, y = task.full(state.theta.dtype)
            fa = pair.flow.task.scaled_outputs(x, flow.theta)
            fl = pair.lin.task.scaled_outputs(x, lin.theta)
            out[f"{name}risk"] = ((fa - y) ** 2).mean(-1)
            out[f"lin_{name}risk"] = ((fl - y) ** 2).mean(-1)
            gaps.append((fa - fl) ** 2)
            if not name:
                residual = fa - y
        out["lin_gap"] = torch.cat(gaps, -1).mean(-1).sqrt()
        out["displacement"] = (flow.theta - box["th0"]).norm(dim=-1).mean(-1)
        K = tangent_kernel(train.unit, flow.theta, train.X.to(flow.theta))
        spec = kernel_spectrum(K, k=1)
        out.update({"ntk_change": kernel_change(K, box["K0"]), "ntk_lam_min": spec.lam_min,
                    "ntk_lam_max": spec.top[:, 0], "ntk_rayleigh": kernel_rayleigh(K, residual)})
    return {k: v.double().cpu().numpy() for k, v in out.items()}


def _w2(box, state) -> np.ndarray:
    """W2(ρ_T, ρ_0) per seed [S] (POT, exact)."""
    flow, _ = box["pair"].halves(state)
    return np.array([w2(flow.theta[b], box["th0"][b]) for b in range(flow.theta.shape[0])])


FIGURES = lazy_figures.lazy_figures
