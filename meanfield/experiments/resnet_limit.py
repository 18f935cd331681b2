"""resnet-limit: depth and width limits of trained ResNets against a high-resolution reference.

For each task, L × M measure-valued ResNets (``models.resnet``: units u tanh(⟨w, x⟩ + b) in
hidden dimension D = lift·d, A = (I, …, I)ᵀ, B = (I, 0, …, 0), Barboni–Peyré–Vialard's
lifting) are trained by the full-batch conditional-OT flow (``dynamics.cot``, ξ = 1,
dt, ``steps`` steps, T = steps·dt on the MMN axis) on n_train points x ~ N(0, I_d), and
compared with the reference (L_ref, M_ref):

* ``neg``: y = −x.  For odd d, −Id reverses orientation, so no flow of R^d (no ResNet
  without lifting) represents it; in the lifted space it is reachable.
* ``smooth``: y = x + Σ_{k≤8} C_k sin(⟨W_k, x⟩ + c_k)/√8, W_k ~ N(0, I_d), C_k ~ N(0, I_d),
  c_k ~ U[0, 2π) (drawn with ``task_seed``), a random smooth map.

metrics.csv: one row per recorded step of every job, with columns task (index into
``tasks``), L, M, step, t, risk (mean over seeds) and risk_r<seed>.  results.json: the
distances and fitted slopes.  particles.npz: snapshots of the first task's reference, and its
training data (data_X, data_Y) for the movie of the data transported through depth.

Distances, per seed, to the reference trained from the same seed: the output distance
sqrt(mean_k |f_{L,M}(x_k) − f_ref(x_k)|²) on n_test fresh test points after training, and
the risk-curve distance max_t |R_{L,M}(t) − R_ref(t)| over the recorded times.

Initial law (``init``):
* ``shared`` (default): replica r draws M atoms θ_j ~ N(0, diag(u_std², w_std²/D, b_std²))
  used by *every* layer (μ_0 = ds ⊗ (1/M) Σ_j δ_θj, the same measure for every L).  The
  depth sweep (L in ``depths``, M = M_ref) reuses the reference's atoms, so it differs from
  the reference in depth only; the width sweep (M in ``widths``, L = L_ref) draws fresh atoms,
  so it differs in width only.
* ``iid``: every layer draws its own units (Chizat et al.'s setting, error O(1/L + 1/√(LM))),
  so the depth sweep also carries the 1/√(LM) fluctuation.

Slopes of log(mean distance over seeds) against log L and log M are fitted with
``scipy.stats.linregress``, with 95 % percentile bootstrap intervals over the seeds
(``scipy.stats.bootstrap``); seeds are replicas of one tensor (``replicas``).  The distance
to a reference at finite (L_ref, M_ref) reads c(1/L − 1/L_ref) in depth and
c(1/M + 1/M_ref)^{1/2} in width, so sizes far below the reference are used.  Published
comparison: finite ResNets approach the mean-ODE limit at O(1/L + α/√(LM))
(lchizat/2026-resnets-of-all-shapes-and-sizes, arXiv:2603.18168), i.e. slopes −1 and −1/2.
The tasks are ``models.resnet_tasks.make_task``, the initial law
``models.resnet_gaussian_init.unit_init``, the distances and slopes
``analysis.resnet_limits.limit_distances``, the figures ``figures.resnets.limit_figures``.

``scale = "small"`` (the test) shrinks every size; ``"full"`` is the README's run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..analysis.resnet_limits import PUBLISHED_SLOPES, limit_distances
from ..dynamics import ConditionalOTFlow
from ..errors import ConfigError
from ..figures import resnets
from ..models.resnet import ResNet, grid_measure, lift_matrices
from ..models.resnet_gaussian_init import unit_init
from ..models.resnet_tasks import TASKS, make_task
from ..seeds import derive_generator
from .config import ResNetConfig, parse_ints
from .plan import Plan
from .resnet_common import job_phase, snapshots_arrays, write_outputs

NAME = "resnet-limit"
VIEWS = ("depth", "params")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "tasks=neg", "steps=10", "log_every=5", "save_every=5",
        "checkpoint_every=5")


@dataclass(frozen=True)
class Config(ResNetConfig):
    """Keys of resnet-limit: the reference (L_ref, M_ref), the depths and widths compared
    with it, the data sizes and the units' initial law.  ``scale = "small"`` presets L_ref =
    16, M_ref = 32, depths 2,4, widths 2,4, n_train = 16, n_test = 32 (the defaults are the
    full run's).  Sizes stay ≤ 1/8 of the reference; below M ≈ 8 the width error is pre-asymptotic
    (measured: d² fell by 1.4–1.6× per doubling of M from 2 to 16, 2.1× from 16 to 32)."""

    d: int = 3
    steps: int = 100
    dt: float = 0.2
    replicas: int = 4
    dtype: str = "float32"
    log_every: int = 5
    save_every: int = 50
    checkpoint_every: int = 50
    tasks: str = "neg,smooth"
    lift: int = 2
    activation: str = "tanh"
    init: str = "shared"
    L_ref: int = 128
    M_ref: int = 512
    depths: str = "2,4,8,16"
    widths: str = "8,16,32,64"
    n_train: int = 64
    n_test: int = 256
    task_seed: int = 0
    init_u_std: float = 1.0
    init_w_std: float = 1.0
    init_b_std: float = 0.5

    _choices = {"init": ("shared", "iid")}
    _presets = {"scale": {"full": {}, "small": {"L_ref": 16, "M_ref": 32, "depths": "2,4",
                                                 "widths": "2,4", "n_train": 16, "n_test": 32}}}
    _help = {"d": "input dimension of the data x ~ N(0, I_d)",
             "dt": "step of the conditional-OT flow on the MMN time axis",
             "replicas": "independent seeds (replicas of one tensor)",
             "tasks": "the targets, comma-separated: neg (y = −x) and/or smooth (a random smooth map)",
             "lift": "hidden dimension D = lift·d (Barboni–Peyré–Vialard's lifting)",
             "activation": "σ of the residual units u σ(⟨w, x⟩ + b)",
             "init": "initial law: shared (the same M atoms in every layer) or iid (per layer)",
             "L_ref": "layers of the reference ResNet",
             "M_ref": "units per layer of the reference ResNet",
             "depths": "the depths L compared with the reference, comma-separated",
             "widths": "the widths M compared with the reference, comma-separated",
             "n_train": "training points x ~ N(0, I_d)",
             "n_test": "fresh test points of the output distance",
             "task_seed": "seed of the data and of the smooth task's map",
             "init_u_std": "initial u ~ N(0, init_u_std²)",
             "init_w_std": "initial w ~ N(0, init_w_std²/D I_D)",
             "init_b_std": "initial b ~ N(0, init_b_std²)"}
    # the hidden states and adjoints of every point at every layer of the reference
    _size_terms = {"n_train": lambda c: 16 * (c.L_ref + 2) * c.replicas * c.n_train * c.lift * c.d * 8,
                   "n_test": lambda c: 16 * (c.L_ref + 2) * c.replicas * c.n_test * c.lift * c.d * 8}

    def validate(self):
        """ResNetConfig's checks, then (``ConfigError``): tasks among "neg", "smooth"; lift,
        L_ref, M_ref, n_train, n_test ≥ 1; task_seed ≥ 0; init_u_std, init_w_std, init_b_std
        finite and ≥ 0; every depth < L_ref and width < M_ref; steps a multiple of
        log_every."""
        super().validate()
        if not self.task_list or any(t not in TASKS for t in self.task_list):
            raise ConfigError(f"tasks must list 'neg' and/or 'smooth', got {self.tasks!r}")
        self.check_bounds(at_least_one=("lift", "L_ref", "M_ref", "n_train", "n_test"),
                          nonnegative_ints=("task_seed",),
                          nonnegative=("init_u_std", "init_w_std", "init_b_std"))
        s = self.sizes()
        if max(s["depths"]) >= s["L_ref"] or max(s["widths"]) >= s["M_ref"]:
            raise ConfigError(f"depths and widths must stay below the reference (L_ref={s['L_ref']}, "
                              f"M_ref={s['M_ref']}), got depths {s['depths']} and widths {s['widths']}")
        if self.steps % self.log_every:
            raise ConfigError(f"steps ({self.steps}) must be a multiple of log_every ({self.log_every})")

    @property
    def task_list(self) -> list[str]:
        """The task names in ``tasks`` (comma-separated, stripped, empty entries dropped)."""
        return [t.strip() for t in self.tasks.split(",") if t.strip()]

    def sizes(self) -> dict:
        """{"L_ref", "M_ref", "depths": [L …], "widths": [M …], "n_train", "n_test"}."""
        return {"L_ref": self.L_ref, "M_ref": self.M_ref, "n_train": self.n_train, "n_test": self.n_test,
                "depths": parse_ints("depths", self.depths), "widths": parse_ints("widths", self.widths)}

    def largest_job(self) -> tuple[int, int]:
        """The reference (L_ref, M_ref)."""
        return self.L_ref, self.M_ref

    def unit_dim(self) -> int:
        """u, w in the lifted dimension D = lift·d, and b: 2D + 1."""
        return 2 * self.lift * self.d + 1


def plan(cfg: Config) -> Plan:
    """One job per (task, L, M): the reference (L_ref, M_ref), the depth sweep (L, M_ref)
    and the width sweep (L_ref, M), each trained for ``steps`` steps; snapshots of the first
    task's reference; results: distances to the reference and fitted slopes."""
    sz = cfg.sizes()
    dtype = getattr(torch, cfg.dtype)
    A, B = lift_matrices(cfg.d, cfg.lift)
    model = ResNet(A, B, activation=cfg.activation)
    Lr, Mr = sz["L_ref"], sz["M_ref"]
    jobs = [(Lr, Mr)] + [(L, Mr) for L in sz["depths"]] + [(Lr, M) for M in sz["widths"]]

    def key(task, L, M):
        return f"{task}/L={L}/M={M}"

    def phases(shared):
        out = []
        for ti, task in enumerate(cfg.task_list):
            X, Y, Xt, Yt = make_task(task, cfg.d, sz["n_train"], sz["n_test"], cfg.task_seed + ti)
            for L, M in jobs:
                out.append(job_phase(
                    key(task, L, M), {"task": ti, "L": L, "M": M},
                    lambda L=L, M=M, X=X, Y=Y: _build(cfg, model, X, Y, L, M, Mr, dtype),
                    log_every=cfg.log_every,
                    save_every=cfg.save_every if (L, M) == (Lr, Mr) and ti == 0 else None,
                    measure=_measure, finish=lambda f, s, r, sn, Xt=Xt: _finish(f, s, r, sn, Xt)))
        return out

    def results(ctx):
        out = {}
        for task in cfg.task_list:
            out[task] = limit_distances({(L, M): ctx.done[key(task, L, M)].result for L, M in jobs}, sz)
        ref_snaps = ctx.done[key(cfg.task_list[0], Lr, Mr)].snaps
        ref_layer = (torch.arange(Lr, dtype=torch.float64) / Lr).repeat_interleave(Mr)
        X, Y, _, _ = make_task(cfg.task_list[0], cfg.d, sz["n_train"], sz["n_test"], cfg.task_seed)
        arrays = snapshots_arrays(ref_snaps, ref_layer, model.param_names,
                                  {**model.arrays(), "data_X": X.numpy(), "data_Y": Y.numpy()})
        return write_outputs(ctx, arrays, {"experiment": NAME, "sizes": sz, "tasks": out,
                                           "published": dict(PUBLISHED_SLOPES)})

    return Plan(phases=phases, results=results, threads=cfg.threads,
                record={"model": model.to_dict(), "sizes": sz})


def _build(cfg, model, X, Y, L, M, M_ref, dtype):
    """The flow and the initial state of an L × M job (atoms per the ``init`` rule)."""
    R, D = cfg.replicas, model.D
    kw = dict(u_std=cfg.init_u_std, w_std=cfg.init_w_std, b_std=cfg.init_b_std)
    if cfg.init == "shared":
        # the reference and the depth sweep share the M_ref atoms (one stream per M);
        # width-M atoms come from their own stream
        atoms = unit_init(R, M, D, generator=derive_generator(cfg.seed, "atoms", M), **kw)
        theta = atoms[:, None].expand(R, L, M, model.P)
    else:
        theta = unit_init(R, M, D, generator=derive_generator(cfg.seed, "atoms", L, M), layers=L, **kw)
    meas = grid_measure(theta.to(dtype).contiguous(), param_names=model.param_names)
    flow = ConditionalOTFlow(model, X.to(dtype), Y.to(dtype), dt=cfg.dt, backend=cfg.backend)
    return flow, flow.init(meas, generator=derive_generator(cfg.seed, "flow"))


def _measure(flow, state):
    loss = flow.loss(state).double()
    return {"risk": float(loss.mean()), **{f"risk_r{r}": float(x) for r, x in enumerate(loss)}}


def _finish(flow, state, rows, snaps, Xt):
    out = flow.model.forward(state.theta, state.weights, flow.layers(state), Xt.to(state.theta.dtype))
    curve = np.array([[r[f"risk_r{i}"] for i in range(state.theta.shape[0])] for r in rows]).T   # (R, K)
    return {"out": out.detach().double().numpy(), "curve": curve,
            "t": np.array([r["t"] for r in rows])}


FIGURES = resnets.limit_figures
