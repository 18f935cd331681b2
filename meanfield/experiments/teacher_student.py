"""teacher-student: a two-layer student trained on a teacher network with Gaussian inputs.

Task: y = c + f*(x) + noise, f*(x) = Σ_k m*_k φ(x; θ*_k), x ~ N(0, I_d), with φ = a σ(⟨w, x⟩)
(σ = ReLU or erf(·/√2): closed-form V, U, R_#, so the risk is exact).  The teacher has m0
units with unit-norm w*_k (drawn with ``teacher_seed``), a*_k = 1, weights 1/m0 (or ±1/m0
with ``teacher_sign = "alternate"``).

Student: N particles, a_i ~ N(init_a_mean, init_a_std²), w_i ~ N(0, init_std²/d · I_d),
moved by population GD (``drift = "population"``), SGD with ``batch_size`` fresh samples
(``drift = "sgd"``; batch_size = 1 is MMN's online SGD), with optional noise β, L2 λ and
schedules ξ(t), β(t).  Conventions: docs/design.md §1 (risk without ½, t = k·dt).

Starting network.  ``init = FILE`` starts the student from the network saved in FILE (a
torch file of ``nn.Sequential(nn.Linear(d, N, bias=False), act, nn.Linear(N, 1))``, its
state dict or a ``meanfield export``; layout matching the run's d, N, activation:
``meanfield.experiments.init_file``) instead of drawing it.  Its output bias is a fixed
offset c: the student is c + f, trained as f on the labels y − c (the teacher's label offset
becomes offset − c); config.json records the file's SHA-256 under "init" and resume refuses
a changed file.

Defaults (the main job): d = 10, m0 = 4, N = 1000, population GD, dt = 0.2, 1000 steps
(T = 200): under a minute on 2 CPU cores.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..dynamics import DRIFTS, ParticleDynamics
from ..errors import ConfigError
from ..models import ACTIVATIONS, TeacherStudent, Unit
from .config import TwoLayerConfig
from .init_file import read_init
from .particles import check_scale, scaled_task, simulation_phase
from .plan import Plan

NAME = "teacher-student"
VIEWS = ("cloud", "plane")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("N=20", "d=3", "steps=20", "backend=torch", "log_every=5", "save_every=10",
        "checkpoint_every=10")


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of teacher-student (see the module docstring): the teacher (m0 units, activation
    σ, output_weight: units a σ(⟨w, x⟩) rather than σ(⟨w, x⟩), teacher_sign, teacher_seed,
    the label offset c and Gaussian label noise_std), the dynamics (drift, batch_size,
    schedules xi and beta, L2 lam) and the initial law (init_std, init_a_mean,
    init_a_std) or the initial network (init, a torch file); n_mc is the Monte Carlo size of
    risks without closed form."""

    N: int = 1000
    d: int = 10
    steps: int = 1000
    dt: float = 0.2
    log_every: int = 10
    save_every: int = 20          # 51 snapshots: a movie (meanfield animate) of ~2 MB of θ
    checkpoint_every: int = 250
    # task
    m0: int = 4
    activation: str = "relu"
    output_weight: bool = True
    teacher_sign: str = "plus"
    teacher_seed: int = 0
    offset: float = 0.0
    noise_std: float = 0.0
    # dynamics
    drift: str = "population"
    batch_size: int = 1
    xi: str = "1.0"
    beta: str = "inf"
    lam: float = 0.0
    # initial law
    init_std: float = 1.0
    init_a_mean: float = 0.0
    init_a_std: float = 1.0
    init: str = ""                # a torch file of the student to start from ("": draw one)
    # Monte Carlo size for risks without closed form (not needed here, kept for symmetry)
    n_mc: int = 10_000
    # output scale (models.scaled): f_α = α f, or α (f − f_0) with centred
    alpha: float = 1.0
    centred: bool = False

    _schedule_fields = ("xi", "beta")
    _choices = {"activation": ACTIVATIONS, "drift": DRIFTS,
                "teacher_sign": ("plus", "alternate")}
    shardable = True
    _help = {"m0": "units of the teacher",
             "activation": "σ of the units: " + ", ".join(ACTIVATIONS) + " (population drift: relu, erf)",
             "output_weight": "units a σ(⟨w, x⟩) (true) or σ(⟨w, x⟩) (false)",
             "teacher_sign": "the teacher's weights: plus (all 1/m0) or alternate (±1/m0)",
             "teacher_seed": "seed of the teacher's directions",
             "offset": "c: labels y = c + f*(x) + noise",
             "noise_std": "standard deviation of the Gaussian label noise",
             "drift": "population (exact gradient) or sgd (batch_size fresh samples a step)",
             "batch_size": "fresh samples per SGD step (1: MMN's online SGD)",
             "xi": "time scale ξ(t): a number or a schedule spec (power:, log:, linear:)",
             "beta": "inverse temperature β of the noise (inf: none): a number or a schedule spec",
             "lam": "λ of the penalty (λ/2)|θ|² (the free energy's L2 term)",
             "init_std": "initial w_i ~ N(0, init_std²/d I_d)",
             "init_a_mean": "initial a_i ~ N(init_a_mean, init_a_std²)",
             "init_a_std": "initial a_i ~ N(init_a_mean, init_a_std²)",
             "init": "a torch file of the student to start from (\"\": draw it)",
             "n_mc": "Monte Carlo samples of risks without a closed form",
             "alpha": "output scale α: the network trained is α f (lazy as α grows)",
             "centred": "with alpha: train α (f − f_0), the output at initialisation removed"}

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): m0, batch_size, n_mc ≥ 1;
        teacher_seed ≥ 0; offset, init_a_mean finite; noise_std, lam, init_std, init_a_std
        finite and ≥ 0; drift "population" only with a closed-form σ (relu, erf)."""
        super().validate()
        check_scale(self)
        self.check_bounds(at_least_one=("m0", "batch_size", "n_mc"),
                          nonnegative_ints=("teacher_seed",))
        for name in ("offset", "init_a_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be finite, got {getattr(self, name)}")
        self.check_bounds(nonnegative=("noise_std", "lam", "init_std", "init_a_std"))
        if self.drift == "population" and self.activation not in ("relu", "erf"):
            raise ConfigError(f"drift 'population' needs a closed-form activation (relu, erf), "
                              f"got {self.activation!r}; use drift=sgd")


def build_task(cfg: Config, offset: float = 0.0) -> TeacherStudent:
    """The teacher: m0 units of ``Unit(d, activation, output_weight)`` drawn with
    ``teacher_seed`` (unit-norm w*, a* = 1, weights 1/m0 or ±1/m0), label offset and noise;
    with a student's fixed ``offset`` c (an ``init`` network's output bias) the label offset
    is ``cfg.offset − c`` (the student c + f trained as f on y − c)."""
    unit = Unit(cfg.d, cfg.activation, output_weight=cfg.output_weight)
    tgen = torch.Generator().manual_seed(cfg.teacher_seed)
    return TeacherStudent.random(unit, cfg.m0, generator=tgen, sign=cfg.teacher_sign,
                                 offset=cfg.offset - offset, noise_std=cfg.noise_std)


def initial_network(cfg: Config):
    """(θ [N, D] float64, offset c, record) of the ``init`` file
    (``experiments.init_file.read_init``: d, N and activation must match, no hidden biases),
    or None without ``init``."""
    if not cfg.init:
        return None
    unit = Unit(cfg.d, cfg.activation, output_weight=cfg.output_weight)
    return read_init(cfg.init, unit, cfg.N, what="the teacher-student run")


def build(cfg: Config, init=None):
    """(task, dynamics, initial state) from a config (and :func:`initial_network`'s result,
    read when not given); deterministic given the seeds."""
    dtype = getattr(torch, cfg.dtype)
    init = initial_network(cfg) if init is None else init
    task = build_task(cfg, 0.0 if init is None else init[1])
    unit = task.unit
    gen = torch.Generator().manual_seed(cfg.seed)
    R, N, d = cfg.replicas, cfg.N, cfg.d
    if init is not None:
        theta = init[0].expand(R, *init[0].shape).clone().to(dtype)
    else:
        w = torch.randn(R, N, d, generator=gen, dtype=torch.float64) * (cfg.init_std / math.sqrt(d))
        cols = [w]
        if unit.output_weight:
            a = cfg.init_a_mean + cfg.init_a_std * torch.randn(R, N, 1, generator=gen, dtype=torch.float64)
            cols.insert(0, a)
        theta = torch.cat(cols, -1).to(dtype)
    task = scaled_task(cfg, task, theta)
    dyn = ParticleDynamics(task, dt=cfg.dt, drift=cfg.drift, batch_size=cfg.batch_size,
                           xi=cfg.xi, beta=cfg.beta, lam=cfg.lam, backend=cfg.backend)
    state = dyn.init(theta, generator=gen)
    return task, dyn, state


def plan(cfg: Config) -> Plan:
    """One phase: the recorded simulation of :func:`build`'s dynamics from its initial state
    (rows by ``particles.measure_row``: the exact risk, ‖v‖², the PL ratio against
    R_∞ = noise_std²); particles.npz also holds the teacher's arrays; with ``init`` config.json
    records the file under "init" (its SHA-256 and the offset).  Shardable."""
    init = initial_network(cfg)
    task = build_task(cfg, 0.0 if init is None else init[1])
    phase = simulation_phase(cfg, lambda: build(cfg, init)[1:], n_mc=cfg.n_mc,
                             risk_inf=0.0 if cfg.noise_std == 0 else cfg.noise_std ** 2)
    record = {"task": task.to_dict()}
    if init is not None:
        record["init"] = init[2]
    return Plan(phases=lambda shared: [phase], record=record,
                arrays={"param_names": np.array(task.param_names), **task.arrays()})
