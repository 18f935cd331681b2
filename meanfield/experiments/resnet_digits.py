"""resnet-digits: a measure-valued ResNet classifier on scikit-learn's 8×8 digits, test accuracy against L and M.

Data: ``sklearn.datasets.load_digits`` (1797 images, 64 pixels / 16, 10 classes; shipped with
scikit-learn, no download), split at random (``data_seed``) into ``n_test`` test images and
the rest for training, centred with the training mean.  Fixed embedding A [D, 64]: the top
D principal directions of the training images, whitened (each embedded coordinate has unit
variance on the training set); fixed read-out B = (I_10, 0) [10, D] (the first ten hidden
coordinates are the logits, Barboni–Peyré–Vialard's B ∝ (Id, 0, …, 0)).  L × M residual
units u tanh(⟨w, x⟩ + b), drawn i.i.d. per layer (u ~ N(0, 1), w ~ N(0, I/D), b ~ N(0, ¼)),
trained on the cross-entropy by minibatch SGD of the conditional-OT flow (``batch_size``
images per step without replacement, step dt on the MMN axis, ξ = 1; velocity L·M × the
plain ResNet's gradient).  Seeds are replicas of one tensor.

metrics.csv (one row every ``log_every`` steps of every (L, M) job): L, M, step, t, risk
(full training cross-entropy), test_loss, test_acc (means over seeds) and per-seed
columns.  results.json: the final test accuracy per (L, M), mean and per seed.  Initial law:
``models.resnet_gaussian_init.unit_init``; figures: ``figures.resnets.digits_figures``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import data
from ..dynamics import resnet_sgd
from ..errors import ConfigError
from ..figures import resnets
from ..models.resnet import ResNet, grid_measure
from ..models.resnet_gaussian_init import unit_init
from ..seeds import derive_generator
from .config import ResNetConfig, parse_ints
from .plan import Plan
from .resnet_common import job_phase, snapshots_arrays, write_outputs

NAME = "resnet-digits"
VIEWS = ("depth", "params")     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=10", "log_every=5", "save_every=5", "checkpoint_every=5")

@dataclass(frozen=True)
class Config(ResNetConfig):
    """Keys of resnet-digits: the depths × widths trained, the hidden (PCA) dimension, the
    minibatch, the test split and the units' initial law.  ``scale = "small"`` presets
    depths 1,2 and widths 4 (the defaults are the full run's: 1,2,4,8 × 8,32,128)."""

    steps: int = 600
    dt: float = 1.0
    replicas: int = 2
    log_every: int = 50
    save_every: int = 300
    checkpoint_every: int = 100
    depths: str = "1,2,4,8"
    widths: str = "8,32,128"
    hidden: int = 32
    batch_size: int = 128
    n_test: int = 450
    data_seed: int = 0
    init_u_std: float = 1.0
    init_w_std: float = 1.0
    init_b_std: float = 0.5

    _presets = {"scale": {"full": {}, "small": {"depths": "1,2", "widths": "4"}}}
    _help = {"dt": "step of the minibatch conditional-OT flow on the MMN time axis",
             "replicas": "independent seeds (replicas of one tensor)",
             "depths": "the depths L trained, comma-separated",
             "widths": "the widths M trained, comma-separated",
             "hidden": "hidden dimension D: the top principal directions of the images (10..64)",
             "batch_size": "images per SGD step, drawn without replacement",
             "n_test": "test images held out",
             "data_seed": "seed of the train/test split",
             "init_u_std": "initial u ~ N(0, init_u_std²)",
             "init_w_std": "initial w ~ N(0, init_w_std²/D I_D)",
             "init_b_std": "initial b ~ N(0, init_b_std²)"}

    def validate(self):
        """ResNetConfig's checks, then (``ConfigError``): 10 ≤ hidden ≤ 64; 1 ≤ n_test ≤ 1000;
        1 ≤ batch_size ≤ 1797 − n_test (the training split); data_seed, threads ≥ 0;
        init_u_std, init_w_std, init_b_std finite and ≥ 0; depths and widths valid
        (:meth:`sizes`)."""
        super().validate()
        if not 10 <= self.hidden <= 64:
            raise ConfigError(f"hidden must lie in 10..64 (logits are the first 10 of 64 PCA coordinates), got {self.hidden}")
        if not 1 <= self.n_test <= 1000:
            raise ConfigError(f"n_test must lie in 1..1000, got {self.n_test}")
        if not 1 <= self.batch_size <= 1797 - self.n_test:
            raise ConfigError(f"batch_size must lie in 1..{1797 - self.n_test}, got {self.batch_size}")
        self.check_bounds(nonnegative_ints=("data_seed",),
                          nonnegative=("init_u_std", "init_w_std", "init_b_std"))
        self.sizes()

    def sizes(self) -> dict:
        """{"depths": [L, ...], "widths": [M, ...]} (``parse_ints``: increasing integers ≥ 1)."""
        return {"depths": parse_ints("depths", self.depths), "widths": parse_ints("widths", self.widths)}

    def largest_job(self) -> tuple[int, int]:
        """(max depth, max width)."""
        sz = self.sizes()
        return sz["depths"][-1], sz["widths"][-1]

    def unit_dim(self) -> int:
        """u, w in the hidden dimension, and b: 2·hidden + 1."""
        return 2 * self.hidden + 1


def digits_data(cfg: Config):
    """(model, X_train, y_train, X_test, y_test): the digits split (``data.digits_split``) and
    the ResNet whose embedding A is the training split's whitened principal directions and
    whose read-out B takes the first 10 hidden coordinates as logits."""
    Xtr, ytr, Xte, yte = data.digits_split(cfg.n_test, cfg.data_seed)
    _, S, Vh = torch.linalg.svd(Xtr, full_matrices=False)
    D = cfg.hidden
    A = Vh[:D] * (math.sqrt(len(Xtr)) / S[:D, None])          # whitened principal directions
    B = torch.eye(10, D, dtype=torch.float64)
    return ResNet(A, B, activation="tanh", loss="cross_entropy"), Xtr, ytr, Xte, yte


def plan(cfg: Config) -> Plan:
    """One job per (L, M) (widths slowest), minibatch SGD of the conditional-OT flow on the
    training split; snapshots of the last job; results: final test accuracy per (L, M)."""
    sz = cfg.sizes()
    dtype = getattr(torch, cfg.dtype)
    jobs = [(L, M) for M in sz["widths"] for L in sz["depths"]]
    model, Xtr, ytr, Xte, yte = digits_data(cfg)
    test = (Xte.to(dtype), yte)

    def key(L, M):
        return f"L={L}/M={M}"

    def phases(shared):
        return [job_phase(
            key(L, M), {"L": L, "M": M}, lambda L=L, M=M: _build(cfg, model, Xtr, ytr, L, M, dtype),
            log_every=cfg.log_every, save_every=cfg.save_every if (L, M) == jobs[-1] else None,
            measure=lambda f, s: _measure(f, s, *test),
            finish=lambda f, s, r, sn: {"layer": s.layer.numpy()}) for L, M in jobs]

    def results(ctx):
        res = {(L, M): ctx.done[key(L, M)] for L, M in jobs}
        last = res[jobs[-1]]
        R = cfg.replicas
        acc = {f"L={L},M={M}": {"L": L, "M": M, "test_acc": r.rows[-1]["test_acc"],
                                 "test_acc_seeds": [r.rows[-1][f"test_acc_r{i}"] for i in range(R)],
                                 "train_loss": r.rows[-1]["risk"], "test_loss": r.rows[-1]["test_loss"]}
               for (L, M), r in res.items()}
        arrays = snapshots_arrays(last.snaps, last.result["layer"], model.param_names,
                                  {**model.arrays(), "data_X": Xte.numpy(), "data_Y": yte.numpy()})
        return write_outputs(ctx, arrays, {"experiment": NAME, "sizes": sz, "n_train": len(Xtr),
                                           "n_test": len(Xte), "final": acc})

    return Plan(phases=phases, results=results, threads=cfg.threads,
                record={"model": model.to_dict(), "sizes": sz, "n_train": len(Xtr)})


def _build(cfg, model, Xtr, ytr, L, M, dtype):
    g = derive_generator(cfg.seed, "L", L, "M", M)
    theta = unit_init(cfg.replicas, M, model.D, generator=g, u_std=cfg.init_u_std, w_std=cfg.init_w_std,
                      b_std=cfg.init_b_std, layers=L)
    flow = resnet_sgd(model, Xtr.to(dtype), ytr, dt=cfg.dt, batch_size=cfg.batch_size, backend=cfg.backend)
    return flow, flow.init(grid_measure(theta.to(dtype), param_names=model.param_names), generator=g)


def _measure(flow, state, Xte, yte):
    train = flow.loss(state).double()
    out = flow.model.forward(state.theta, state.weights, flow.layers(state), Xte)
    test = flow.model.loss(out, yte[None]).double()
    acc = (out.argmax(-1) == yte).double().mean(-1)
    row = {"risk": float(train.mean()), "test_loss": float(test.mean()), "test_acc": float(acc.mean())}
    for r in range(len(acc)):
        row.update({f"risk_r{r}": float(train[r]), f"test_acc_r{r}": float(acc[r])})
    return row


FIGURES = resnets.digits_figures
