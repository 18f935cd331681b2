"""dataset: a two-layer mean-field network trained on your own data (a file or a scikit-learn data set).

Data (``data``): an ``.npz`` file with arrays ``X`` [n, d] and ``y`` [n]; a ``.csv`` file
whose last column is y (one header line optional; every other field a number); or
``sklearn:NAME`` for the data sets scikit-learn ships — ``breast_cancer`` (569 × 30,
malignant −1 / benign +1), ``digitsAB`` (two digits A ≠ B of the 8 × 8 digits, 64 pixels,
A ↦ −1, B ↦ +1, e.g. ``digits01``, ``digits38``), ``irisAB`` and ``wineAB`` (two of the
three classes 0, 1, 2, e.g. ``iris12``, ``wine01``) and ``diabetes`` (442 × 10, a
regression).  ``meanfield.data`` reads and checks them, before the run directory is
created: a missing file, wrong shapes, NaN/inf, non-binary labels for the logistic loss,
fewer than 2 points or text in a csv is a ``ConfigError`` (one line, exit status 2, nothing
written).

Labels.  With ``loss = "logistic"`` y must be binary, in {−1, +1} or {0, 1} (0 ↦ −1).  With
``loss = "squared"`` binary labels are mapped to ±1 the same way (a classification with the
squared loss: accuracy is logged); any other y is a regression target.

Split and scaling.  ``test_fraction`` of the points (stratified by class for
classification) are held out, drawn with ``split_seed``; with ``standardize`` every feature
is centred and scaled by the training split's mean and standard deviation (constant features
are only centred), and so are regression targets.  The split sizes, the label map and the
scaling are recorded in config.json (``data``), with a SHA-256 of the data as read (X, then y,
float64) so that a changed file can be told from the one a run used.

Model and dynamics.  N particles of the unit φ(x; θ) = a σ(⟨w, x⟩ + b) (``activation``,
``output_weight``, ``bias``) on the data's d inputs (``d`` is filled in from the data when a
run is configured, so config.json records it) with a ~ N(init_a_mean, init_a_std²),
w ~ N(0, init_std²/d I), b ~ N(0, init_b_std²) — or, with ``init = FILE``, the network saved
in FILE (a torch file of ``nn.Sequential(nn.Linear(d, N), act, nn.Linear(N, 1))``, its state
dict or a ``meanfield export``; in the data's own units, converted exactly to the run's
standardised ones, its layout matching the run's: ``meanfield.experiments.init_file``).  Its
output bias is a fixed offset c (the network is c + f; regression only: the labels become
y − c); config.json records the file's SHA-256 under "init" and resume refuses a changed
file.  ``FiniteDataset`` with the chosen loss (no ½; logistic
ℓ = log(1 + e^{−y f})).  ``drift = "population"`` is full-batch gradient descent on the
training risk, ``"sgd"`` minibatches of ``batch_size`` (with replacement), with the usual L2
``lam``, noise ``beta`` (mean-field Langevin) and schedules ``xi``, ``beta``, on the MMN time
axis t = k·dt (docs/design.md §1).  One step is one full-batch SGD step with learning rate N·dt
on the torch module of ``meanfield.to_module`` (its docstring derives the factor N).

Metrics (metrics.csv, one row every ``log_every`` steps): ``risk`` (the training risk,
exact), ``velocity_sq``, ``test_risk``; for classification ``train_accuracy``,
``test_accuracy`` and ``test_error``; for the logistic loss with a homogeneous unit (ReLU or
linear with output weight) the normalised margin ``margin`` = min_k y_k f(x_k) / ∫|θ|² dρ_N
(Chizat–Bach 2020: the logistic gradient flow of wide two-layer networks approaches a
max-margin classifier); with noise also ``entropy`` and ``free_energy``.  Replicas add
``<column>_r<b>`` per replica.  particles.npz: 51 snapshots (save_every = steps/50),
``param_names``, and the standardised splits (``data_X``, ``data_Y``, ``test_X``,
``test_Y``) when they hold at most 2·10⁶ numbers.  Figures: ``dataset.png`` (train and test
risk, test error, margin against t; ``meanfield.figures.dataset``) beside the standard risk,
particle and histogram figures.

Sweeps over N and seeds work unchanged, e.g. ``meanfield sweep dataset --grid N=10,30,100
--grid seed=0:4 --set data=sklearn:breast_cancer --metric test_error --out runs/ds``;
``meanfield.analysis.tables.sweep_table(DIR)`` tabulates such a sweep per N.

Defaults (full mode): breast_cancer, logistic loss, ReLU units with output weight, no bias,
N = 100, population GD with dt = 2, 2000 steps (T = 4000), 20 % held out; with
``loss = "squared"`` dt = 0.02 and 10 000 steps (T = 200): ``SQUARED``, the largest step at
which that loss's risk falls at every row (measured on breast_cancer, N = 100).  ``scale=small``
(the test suite): N = 50, 200 steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import data
from ..dynamics import DRIFTS, ParticleDynamics
from ..errors import ConfigError
from ..figures import dataset
from ..models import ACTIVATIONS, FiniteDataset, Unit
from ..models.tasks import LOSSES
from .config import TwoLayerConfig
from .init_file import read_init
from .particles import check_scale, dtype_of, scaled_task, simulation_phase
from .plan import Plan

NAME = "dataset"
VIEWS = ("cloud",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=20", "log_every=5", "save_every=10", "checkpoint_every=10")

SMALL = {"N": 50, "steps": 200, "log_every": 10, "save_every": 4, "checkpoint_every": 100}
# the squared loss's defaults: its GD is stable (the risk falls at every row) at dt = 0.02 on
# breast_cancer with N = 100; dt = 0.05 to 0.25 oscillates, 0.35 and above diverge (measured)
SQUARED = {"dt": 0.02, "steps": 10_000, "log_every": 100, "save_every": 200, "checkpoint_every": 2500}
MAX_SAVED_NUMBERS = 2_000_000          # data arrays kept in particles.npz up to this size


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of dataset (see the module docstring): ``data`` (FILE.npz, FILE.csv or
    sklearn:NAME), ``loss`` (squared | logistic), ``test_fraction`` held out with
    ``split_seed``, ``standardize``; the unit (``activation``, ``output_weight``, ``bias``);
    the dynamics (``drift``, ``batch_size``, schedules ``xi`` and ``beta``, L2 ``lam``); the
    initial law (``init_std`` of w·√d, ``init_a_mean``, ``init_a_std``, ``init_b_std``).
    ``d`` is the data's input dimension, filled in by :meth:`build` (a ``d`` given that
    differs from the data's is refused); ``init`` a torch file of the network to start from
    (module docstring).  ``scale=small`` swaps in ``SMALL``."""

    scale: str = "full"
    N: int = 100
    steps: int = 2000
    dt: float = 2.0
    log_every: int = 20
    save_every: int = 40          # 51 snapshots
    checkpoint_every: int = 500
    # data
    data: str = "sklearn:breast_cancer"
    loss: str = "logistic"
    test_fraction: float = 0.2
    split_seed: int = 0
    standardize: bool = True
    # unit
    activation: str = "relu"
    output_weight: bool = True
    bias: bool = False
    # dynamics
    drift: str = "population"
    batch_size: int = 32
    xi: str = "1.0"
    beta: str = "inf"
    lam: float = 0.0
    # initial law
    init_std: float = 1.0
    init_a_mean: float = 0.0
    init_a_std: float = 1.0
    init_b_std: float = 1.0
    init: str = ""                # a torch file of the network to start from ("" : draw one)
    # output scale (models.scaled): f_α = α f, or α (f − f_0) with centred
    alpha: float = 1.0
    centred: bool = False

    _schedule_fields = ("xi", "beta")
    _choices = {"scale": ("full", "small"), "loss": LOSSES, "activation": ACTIVATIONS,
                "drift": DRIFTS}
    _presets = {"scale": {"small": SMALL}, "loss": {"squared": SQUARED}}
    _help = {"scale": "preset: full or small (scale=small: N = 50, 200 steps)",
             "N": "particles (hidden units)",
             "d": "input dimension: filled in from the data (leave it unset)",
             "dt": "GD step on the MMN time axis (the squared loss needs a smaller one)",
             "data": "FILE.npz (X, y), FILE.csv (y last) or sklearn:NAME",
             "loss": "squared or logistic (neither with ½)",
             "test_fraction": "fraction of the points held out for testing",
             "split_seed": "seed of the train/test split",
             "standardize": "centre and scale features (and regression targets) on the training split",
             "activation": "σ of the units a σ(⟨w, x⟩ + b)",
             "output_weight": "units a σ(⟨w, x⟩ + b) (true) or σ(⟨w, x⟩ + b) (false)",
             "bias": "units with a bias b",
             "drift": "population (full-batch GD) or sgd (minibatches of batch_size)",
             "batch_size": "points per SGD step (drawn with replacement)",
             "xi": "time scale ξ(t): a number or a schedule spec (power:, log:, linear:)",
             "beta": "inverse temperature β of the noise (inf: none): a number or a schedule spec",
             "lam": "λ of the penalty (λ/2)|θ|²",
             "init_std": "initial w ~ N(0, init_std²/d I)",
             "init_a_mean": "initial a ~ N(init_a_mean, init_a_std²)",
             "init_a_std": "initial a ~ N(init_a_mean, init_a_std²)",
             "init_b_std": "initial b ~ N(0, init_b_std²)",
             "init": "a torch file of the network to start from (\"\": draw it)",
             "alpha": "output scale α: the network trained is α f (lazy as α grows)",
             "centred": "with alpha: train α (f − f_0), the output at initialisation removed"}

    @classmethod
    def build(cls, toml_path=None, overrides=(), base: dict | None = None):
        """``RunConfig.build``, then ``d`` set to the data's input dimension (the data loaded
        and checked, ``meanfield.data.load``, cached) so that config.json records it; a ``d``
        given in the TOML file or ``--set`` that differs from the data's is a ``ConfigError``.
        With ``base`` (a resumed run's saved config) ``d`` is kept as recorded."""
        import dataclasses

        from .config import read_toml

        cfg = super().build(toml_path, overrides, base)
        if base is not None:
            return cfg
        d = int(data.load(cfg.data)[0].shape[1])
        given = any(item.partition("=")[0].strip() == "d" for item in overrides) or \
            (toml_path is not None and "d" in read_toml(toml_path))
        if given and cfg.d != d:
            raise ConfigError(f"d is the data's input dimension ({d} for {cfg.data}), got d={cfg.d}: "
                              "leave d unset")
        return cfg if cfg.d == d else dataclasses.replace(cfg, d=d)

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): ``data`` not empty; test_fraction in
        [0, 1); split_seed ≥ 0; batch_size ≥ 1; init_a_mean finite; lam, init_std, init_a_std,
        init_b_std finite and ≥ 0; alpha finite and > 0.  The data themselves are checked by ``meanfield.data.load`` (in
        ``plan``, before anything is written)."""
        super().validate()
        check_scale(self)
        if not self.data.strip():
            raise ConfigError("data must name a .npz or .csv file or sklearn:NAME, got ''")
        if not (math.isfinite(self.test_fraction) and 0 <= self.test_fraction < 1):
            raise ConfigError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        self.check_bounds(at_least_one=("batch_size",), nonnegative_ints=("split_seed",),
                          nonnegative=("lam", "init_std", "init_a_std", "init_b_std"))
        if not math.isfinite(self.init_a_mean):
            raise ConfigError(f"init_a_mean must be finite, got {self.init_a_mean}")

    def memory_bytes(self) -> int:
        """Peak bytes: the particles (state, velocity, noise, potentials: 12 copies), the
        snapshots (twice while a checkpoint is written), the data (float64, a few copies) and
        the activations of one evaluation, ~8 arrays of replicas × n × N (n the training
        points for population drift, else the batch; plus the test points).  Loads the data
        (``meanfield.data.load``, cached) to know n and d."""
        X, y, _ = data.load(self.data)
        n, d = X.shape
        item = 4 if self.dtype == "float32" else 8
        p = self.replicas * self.N * (d + 2)
        snaps = self.steps // max(1, self.save_every) + 2
        n_eval = n if self.drift == "population" else self.batch_size + n
        return int(12 * p * item + 2 * snaps * p * item + 4 * n * (d + 1) * 8
                   + 8 * self.replicas * n_eval * self.N * item)


def prepare(cfg: Config) -> dict:
    """Load, check, label, split and standardise the data of ``cfg`` (``meanfield.data``):
    {"X", "y", "X_test", "y_test" (numpy float64, in the run's standardised units),
    "X_data", "y_data", "X_test_data", "y_test_data" (the same splits in the data's own
    units, labels mapped), "classification", "record" (for config.json)}.  All data errors
    are ConfigErrors raised here, before the runner writes anything."""
    X, y, info = data.load(cfg.data)
    y, classification, label_map = data.labels(y, cfg.loss, cfg.data)
    tr, te = data.split(len(y), cfg.test_fraction, cfg.split_seed, y if classification else None)
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    raw = {"X_data": Xtr, "y_data": ytr, "X_test_data": Xte, "y_test_data": yte}
    record = {"source": info["source"], "sha256": data.fingerprint(X, y), "n": int(len(y)),
              "d": int(X.shape[1]), "n_train": int(len(tr)), "n_test": int(len(te)),
              "classification": classification, "label_map": info.get("label_map", label_map),
              "standardize": cfg.standardize}
    if "columns" in info:
        record["columns"] = info["columns"]
    if cfg.standardize:
        Xtr, Xte, ytr, yte, scaling = data.standardize(Xtr, Xte, ytr, yte, targets=not classification)
        record.update(scaling)
    return {"X": Xtr, "y": ytr, "X_test": Xte, "y_test": yte, "classification": classification,
            "record": record, **raw}


# ---- the run ---------------------------------------------------------------------------------
def build_unit(cfg: Config, d: int) -> Unit:
    """The unit a σ(⟨w, x⟩ + b) of the config on inputs of dimension d."""
    return Unit(d, cfg.activation, output_weight=cfg.output_weight, bias=cfg.bias)


def initial_theta(cfg: Config, unit: Unit, gen: torch.Generator) -> torch.Tensor:
    """θ [replicas, N, D] in float64: a ~ N(init_a_mean, init_a_std²), w ~ N(0, init_std²/d I),
    b ~ N(0, init_b_std²), drawn in that order from ``gen``."""
    R, N, d = cfg.replicas, cfg.N, unit.d
    cols = []
    if unit.output_weight:
        cols.append(cfg.init_a_mean + cfg.init_a_std * torch.randn(R, N, 1, generator=gen, dtype=torch.float64))
    cols.append(torch.randn(R, N, d, generator=gen, dtype=torch.float64) * (cfg.init_std / math.sqrt(d)))
    if unit.bias:
        cols.append(cfg.init_b_std * torch.randn(R, N, 1, generator=gen, dtype=torch.float64))
    return torch.cat(cols, -1)


def tasks(cfg: Config, prep: dict, offset: float = 0.0):
    """(training FiniteDataset, test FiniteDataset or None) with the config's unit and loss;
    with a fixed ``offset`` c (an ``init`` network's output bias) the labels are y − c, so
    that the flow trains c + f on y (squared loss)."""
    unit = build_unit(cfg, prep["X"].shape[1])
    train = FiniteDataset(unit, prep["X"], prep["y"] - offset, loss=cfg.loss)
    test = FiniteDataset(unit, prep["X_test"], prep["y_test"] - offset, loss=cfg.loss) \
        if len(prep["y_test"]) else None
    return train, test


def initial_network(cfg: Config, prep: dict):
    """(θ [N, D] float64, offset c, record) of the ``init`` file seen in the run's
    standardised units (``experiments.init_file.read_init``), or None without ``init``.
    A nonzero offset is refused for classification (labels ±1: accuracy and margin are
    those of f itself)."""
    if not cfg.init:
        return None
    rec = prep["record"]
    unit = build_unit(cfg, prep["X"].shape[1])
    theta, offset, record = read_init(cfg.init, unit, cfg.N, x_mean=rec.get("x_mean"),
                                      x_std=rec.get("x_std"), y_mean=rec.get("y_mean", 0.0),
                                      y_std=rec.get("y_std", 1.0), what="the dataset run")
    if offset != 0.0 and prep["classification"]:
        raise ConfigError(f"init file {cfg.init}: its output bias ({offset:.4g}) is a fixed offset, "
                          "which a classification run (labels ±1) does not take: set it to zero")
    return theta, offset, record


def plan(cfg: Config) -> Plan:
    """One phase: the recorded simulation on the training split (rows by
    ``particles.measure_row`` plus :func:`extra_columns`); config.json records the task and
    the data (:func:`prepare`); particles.npz holds param_names and the standardised splits.
    One torch thread: these systems are small (measured on 2 shared cores: N = 1000 on
    breast_cancer, 6 ms per step on one thread, 120 ms on two)."""
    prep = prepare(cfg)
    init = initial_network(cfg, prep)
    train, test = tasks(cfg, prep, 0.0 if init is None else init[1])
    margin_ok = cfg.loss == "logistic" and train.unit.homogeneity is not None

    scaled = {}                     # the tasks at output scale α, centred on this run's θ_0

    def build():
        gen = torch.Generator().manual_seed(cfg.seed)
        theta = initial_theta(cfg, train.unit, gen) if init is None else \
            init[0].expand(cfg.replicas, *init[0].shape).clone()
        theta = theta.to(dtype_of(cfg))
        scaled.update(train=scaled_task(cfg, train, theta),
                      test=None if test is None else scaled_task(cfg, test, theta))
        dyn = ParticleDynamics(scaled["train"], dt=cfg.dt, drift=cfg.drift, batch_size=cfg.batch_size,
                               xi=cfg.xi, beta=cfg.beta, lam=cfg.lam, backend=cfg.backend)
        return dyn, dyn.init(theta, generator=gen)

    phase = simulation_phase(cfg, build, n_mc=1, risk_inf=None,
                             extra=lambda st: extra_columns(st, scaled["train"], scaled["test"],
                                                            prep["classification"], margin_ok and not cfg.centred))
    arrays = {"param_names": np.array(train.param_names)}
    if (len(prep["y"]) + len(prep["y_test"])) * (prep["X"].shape[1] + 1) <= MAX_SAVED_NUMBERS:
        arrays.update({"data_X": prep["X"], "data_Y": prep["y"], "test_X": prep["X_test"],
                       "test_Y": prep["y_test"]})
    record = {"task": train.to_dict(), "data": prep["record"]}
    if init is not None:
        record["init"] = init[2]
    return Plan(phases=lambda shared: [phase], arrays=arrays, threads=1, record=record)


def extra_columns(state, train, test, classification: bool, margin_ok: bool) -> dict:
    """The dataset columns of a metrics row at θ_k (seed means; ``<name>_r<b>`` per replica
    when there are several): test_risk; for classification train_accuracy, test_accuracy,
    test_error; margin (logistic loss, homogeneous unit)."""
    th, w = state.theta, state.weights
    cols = {}
    if test is not None:
        cols["test_risk"] = test.risk(th, w)
    if classification:
        cols["train_accuracy"] = train.accuracy(th, w)
        if test is not None:
            acc = test.accuracy(th, w)
            cols["test_accuracy"] = acc
            cols["test_error"] = 1.0 - acc
    if margin_ok:
        cols["margin"] = train.margin(th, w)
    row = {}
    for k, v in cols.items():
        v = v.double().cpu()
        row[k] = float(v.mean())
        if len(v) > 1:
            row.update({f"{k}_r{b}": float(x) for b, x in enumerate(v)})
    return row


FIGURES = dataset.dataset_figures
