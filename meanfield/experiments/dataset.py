"""dataset: a two-layer mean-field network trained on your own data (a file or a scikit-learn data set).

Data (``data``): an ``.npz`` file with arrays ``X`` [n, d] and ``y`` [n]; a ``.csv`` file
whose last column is y (one header line optional; every other field a number); or
``sklearn:NAME`` for the data sets scikit-learn ships — ``breast_cancer`` (569 × 30,
malignant −1 / benign +1), ``digitsAB`` (two digits A ≠ B of the 8 × 8 digits, 64 pixels,
A ↦ −1, B ↦ +1, e.g. ``digits01``, ``digits38``), ``irisAB`` and ``wineAB`` (two of the
three classes 0, 1, 2, e.g. ``iris12``, ``wine01``) and ``diabetes`` (442 × 10, a
regression).  Everything is checked before the run directory is created: a missing file,
wrong shapes, NaN/inf, non-binary labels for the logistic loss, fewer than 2 points or text
in a csv is a ``ConfigError`` (one line, exit status 2, nothing written).

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
``output_weight``, ``bias``) with a ~ N(init_a_mean, init_a_std²), w ~ N(0, init_std²/d I),
b ~ N(0, init_b_std²); ``FiniteDataset`` with the chosen loss (no ½; logistic
ℓ = log(1 + e^{−y f})).  ``drift = "population"`` is full-batch gradient descent on the
training risk, ``"sgd"`` minibatches of ``batch_size`` (with replacement), with the usual L2
``lam``, noise ``beta`` (mean-field Langevin) and schedules ``xi``, ``beta``, on the MMN time
axis t = k·dt (DESIGN.md §1).  One step is one full-batch SGD step with learning rate N·dt
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
risk, test error, margin against t) beside the standard risk, particle and histogram figures.

Sweeps over N and seeds work unchanged, e.g. ``meanfield sweep dataset --grid N=10,30,100
--grid seed=0:4 --set data=sklearn:breast_cancer --metric test_error --out runs/ds``.

Defaults (full mode): breast_cancer, logistic loss, ReLU units with output weight, no bias,
N = 100, population GD with dt = 2, 2000 steps (T = 4000), 20 % held out.  ``scale=small``
(the test suite): N = 50, 200 steps.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dynamics import DRIFTS, ParticleDynamics
from ..errors import ConfigError
from ..models import ACTIVATIONS, FiniteDataset, Unit
from ..models.tasks import LOSSES
from .config import TwoLayerConfig
from .particles import dtype_of, simulation_phase
from .plan import Plan

NAME = "dataset"
VIEWS = ("cloud",)     # meanfield animate: its views, the first the default
# a config that runs in about a second (the tests run every experiment with it)
TINY = ("scale=small", "steps=20", "log_every=5", "save_every=10", "checkpoint_every=10")

SMALL = {"N": 50, "steps": 200, "log_every": 10, "save_every": 4, "checkpoint_every": 100}
SKLEARN = ("breast_cancer", "diabetes", "digitsAB", "irisAB", "wineAB")
MAX_SAVED_NUMBERS = 2_000_000          # data arrays kept in particles.npz up to this size


@dataclass(frozen=True)
class Config(TwoLayerConfig):
    """Keys of dataset (see the module docstring): ``data`` (FILE.npz, FILE.csv or
    sklearn:NAME), ``loss`` (squared | logistic), ``test_fraction`` held out with
    ``split_seed``, ``standardize``; the unit (``activation``, ``output_weight``, ``bias``);
    the dynamics (``drift``, ``batch_size``, schedules ``xi`` and ``beta``, L2 ``lam``); the
    initial law (``init_std`` of w·√d, ``init_a_mean``, ``init_a_std``, ``init_b_std``).
    ``d`` is not used: the input dimension is the data's (recorded in config.json).
    ``scale=small`` swaps in ``SMALL``."""

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

    _schedule_fields = ("xi", "beta")
    _choices = {"scale": ("full", "small"), "loss": LOSSES, "activation": ACTIVATIONS,
                "drift": DRIFTS}
    _presets = {"scale": {"small": SMALL}}

    def validate(self):
        """TwoLayerConfig's checks, then (``ConfigError``): ``data`` not empty; test_fraction in
        [0, 1); split_seed ≥ 0; batch_size ≥ 1; init_a_mean finite; lam, init_std, init_a_std,
        init_b_std finite and ≥ 0.  The data themselves are checked by :func:`load` (in
        ``plan``, before anything is written)."""
        super().validate()
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
        (:func:`load`, cached) to know n and d."""
        X, y, _ = load(self.data)
        n, d = X.shape
        item = 4 if self.dtype == "float32" else 8
        p = self.replicas * self.N * (d + 2)
        snaps = self.steps // max(1, self.save_every) + 2
        n_eval = n if self.drift == "population" else self.batch_size + n
        return int(12 * p * item + 2 * snaps * p * item + 4 * n * (d + 1) * 8
                   + 8 * self.replicas * n_eval * self.N * item)


# ---- reading the data ----------------------------------------------------------------------
_CACHE: dict = {}


def load(spec: str):
    """(X [n, d] float64, y [n] float64, info) from a data spec (module docstring), checked:
    ConfigError naming the problem for a missing or unreadable file, an unknown sklearn name,
    wrong shapes, non-numeric or non-finite entries, or fewer than 2 points.  Files are cached
    by (path, size, mtime)."""
    spec = spec.strip()
    if spec.startswith("sklearn:"):
        key = (spec,)
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ConfigError(f"data file {spec} does not exist" if not path.exists()
                              else f"data {spec} is not a file")
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        X, y, info = _sklearn(spec[len("sklearn:"):]) if spec.startswith("sklearn:") else _file(path)
        _check(X, y, spec)
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = (X, y, info)
    X, y, info = _CACHE[key]
    return X.copy(), y.copy(), dict(info)


def _pair(name: str, prefix: str, n_classes: int):
    """(A, B) from NAME = prefix + two distinct class digits, or ConfigError."""
    rest = name[len(prefix):]
    if len(rest) == 2 and rest.isdigit() and rest[0] != rest[1] and max(int(c) for c in rest) < n_classes:
        return int(rest[0]), int(rest[1])
    ex = "01, 38" if n_classes == 10 else "01, 12"
    raise ConfigError(f"sklearn:{name}: {prefix} needs two distinct classes out of 0..{n_classes - 1}, "
                      f"e.g. sklearn:{prefix}{ex.split(', ')[0]} or sklearn:{prefix}{ex.split(', ')[1]}")


def _sklearn(name: str):
    from sklearn import datasets

    if name == "breast_cancer":
        X, y = datasets.load_breast_cancer(return_X_y=True)
        return X, np.where(y == 1, 1.0, -1.0), {"source": "sklearn:breast_cancer",
                                                "label_map": {"malignant": -1, "benign": 1}}
    if name == "diabetes":
        X, y = datasets.load_diabetes(return_X_y=True)
        return X, y.astype(np.float64), {"source": "sklearn:diabetes"}
    for prefix, loader, k in (("digits", datasets.load_digits, 10), ("iris", datasets.load_iris, 3),
                              ("wine", datasets.load_wine, 3)):
        if name.startswith(prefix):
            A, B = _pair(name, prefix, k)
            X, y = loader(return_X_y=True)
            keep = (y == A) | (y == B)
            return X[keep], np.where(y[keep] == B, 1.0, -1.0), {
                "source": f"sklearn:{name}", "label_map": {str(A): -1, str(B): 1}}
    raise ConfigError(f"unknown scikit-learn data set {name!r}; choose one of "
                      f"{', '.join('sklearn:' + s for s in SKLEARN)} (AB: two class digits)")


def _file(path: Path):
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _npz(path)
    if suffix == ".csv":
        return _csv(path)
    raise ConfigError(f"data file {path} must end in .npz or .csv (or use sklearn:NAME)")


def _npz(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ConfigError(f"data file {path} is not a readable .npz archive ({type(e).__name__})") from None
    if "X" not in arrays or ("y" not in arrays and "Y" not in arrays):
        raise ConfigError(f"data file {path} needs arrays 'X' [n, d] and 'y' [n]; it holds "
                          f"{sorted(arrays) or 'no arrays'}")
    X, y = arrays["X"], arrays["y"] if "y" in arrays else arrays["Y"]
    for name, a in (("X", X), ("y", y)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ConfigError(f"data file {path}: {name} must hold numbers, got dtype {a.dtype}")
    if X.ndim != 2:
        raise ConfigError(f"data file {path}: X must have shape [n, d], got {list(X.shape)}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ConfigError(f"data file {path}: y must have shape [{X.shape[0]}] (one label per row "
                          f"of X), got {list(y.shape)}")
    return X.astype(np.float64), y.astype(np.float64), {"source": str(path)}


def _csv(path: Path):
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"data file {path} is not a readable text file ({type(e).__name__})") from None
    rows, width, header = [], None, None
    for lineno, fields in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in fields]
        if not fields or all(f == "" for f in fields):
            continue
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if not rows and header is None:              # one header line is allowed
                header = fields
                width = len(fields)
                continue
            col = next(j for j, f in enumerate(fields) if not _is_number(f))
            raise ConfigError(f"data file {path}, line {lineno}, column {col + 1}: "
                              f"{fields[col]!r} is not a number") from None
        if width is None:
            width = len(values)
        if len(values) != width:
            raise ConfigError(f"data file {path}, line {lineno}: {len(values)} fields, expected {width}")
        rows.append(values)
    if width is not None and width < 2:
        raise ConfigError(f"data file {path} needs at least two columns (features, then y), got {width}")
    if not rows:
        raise ConfigError(f"data file {path} holds no data rows")
    a = np.array(rows, dtype=np.float64)
    info = {"source": str(path)}
    if header is not None:
        info["columns"] = header
    return a[:, :-1], a[:, -1], info


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _check(X, y, spec):
    n = X.shape[0]
    if n < 2:
        raise ConfigError(f"data {spec} has {n} point{'s' if n != 1 else ''}; at least 2 are needed")
    if X.shape[1] < 1:
        raise ConfigError(f"data {spec} has no feature columns")
    for name, a in (("X", X), ("y", y)):
        bad = ~np.isfinite(a)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ConfigError(f"data {spec}: {name} has {int(bad.sum())} non-finite entr"
                              f"{'y' if bad.sum() == 1 else 'ies'} (NaN or inf; first in row {row})")


# ---- labels, split, scaling -------------------------------------------------------------
def labels(y: np.ndarray, loss: str, spec: str):
    """(y mapped, classification?, label map or None): binary labels {−1, +1} or {0, 1}
    become ±1 (0 ↦ −1); other labels are a regression target (squared loss only:
    ConfigError for the logistic loss)."""
    vals = np.unique(y)
    if set(vals.tolist()) <= {-1.0, 1.0}:
        return y.copy(), True, None
    if set(vals.tolist()) <= {0.0, 1.0}:
        return np.where(y > 0, 1.0, -1.0), True, {"0": -1, "1": 1}
    if loss == "logistic":
        ex = ", ".join(f"{v:g}" for v in vals[:4]) + (", …" if len(vals) > 4 else "")
        raise ConfigError(f"loss=logistic needs binary labels y in {{-1, +1}} or {{0, 1}}; data {spec} "
                          f"has {len(vals)} distinct values ({ex}); for a regression use loss=squared")
    return y.copy(), False, None


def split(n: int, frac: float, seed: int, y: np.ndarray | None):
    """(train indices, test indices): ``frac`` of the points held out (at least one when
    frac > 0), stratified by class when ``y`` (labels ±1) is given, drawn with
    ``numpy.random.default_rng(seed)``; sorted.  ConfigError when fewer than 2 points would be
    left to train on."""
    rng = np.random.default_rng(seed)
    if frac == 0:
        return np.arange(n), np.arange(0)
    groups = [np.flatnonzero(y == c) for c in (-1.0, 1.0)] if y is not None else [np.arange(n)]
    test = []
    for g in groups:
        if len(g):
            k = int(round(frac * len(g)))
            test.append(rng.permutation(g)[:k])
    test = np.sort(np.concatenate(test)) if test else np.arange(0)
    if len(test) == 0:
        test = np.sort(rng.permutation(n)[:1])
    train = np.setdiff1d(np.arange(n), test)
    if len(train) < 2:
        raise ConfigError(f"test_fraction={frac} leaves {len(train)} training point(s) of {n}; "
                          "at least 2 are needed")
    return train, test


def prepare(cfg: Config) -> dict:
    """Load, check, label, split and standardise the data of ``cfg``: {"X", "y", "X_test",
    "y_test" (numpy float64), "classification", "record" (for config.json)}.  All data errors
    are ConfigErrors raised here, before the runner writes anything."""
    X, y, info = load(cfg.data)
    y, classification, label_map = labels(y, cfg.loss, cfg.data)
    tr, te = split(len(y), cfg.test_fraction, cfg.split_seed, y if classification else None)
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    digest = hashlib.sha256(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(y).tobytes())
    record = {"source": info["source"], "sha256": digest.hexdigest(), "n": int(len(y)), "d": int(X.shape[1]),
              "n_train": int(len(tr)), "n_test": int(len(te)), "classification": classification,
              "label_map": info.get("label_map", label_map), "standardize": cfg.standardize}
    if "columns" in info:
        record["columns"] = info["columns"]
    if cfg.standardize:
        mu, sd = Xtr.mean(0), Xtr.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
        record["x_mean"], record["x_std"] = mu.tolist(), sd.tolist()
        if not classification:
            ym, ys = float(ytr.mean()), float(ytr.std()) or 1.0
            ytr, yte = (ytr - ym) / ys, (yte - ym) / ys
            record["y_mean"], record["y_std"] = ym, ys
    return {"X": Xtr, "y": ytr, "X_test": Xte, "y_test": yte, "classification": classification,
            "record": record}


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


def tasks(cfg: Config, data: dict):
    """(training FiniteDataset, test FiniteDataset or None) with the config's unit and loss."""
    unit = build_unit(cfg, data["X"].shape[1])
    train = FiniteDataset(unit, data["X"], data["y"], loss=cfg.loss)
    test = FiniteDataset(unit, data["X_test"], data["y_test"], loss=cfg.loss) if len(data["y_test"]) else None
    return train, test


def plan(cfg: Config) -> Plan:
    """One phase: the recorded simulation on the training split (rows by
    ``particles.measure_row`` plus :func:`extra_columns`); config.json records the task and
    the data (:func:`prepare`); particles.npz holds param_names and the standardised splits.
    One torch thread: these systems are small (measured on 2 shared cores: N = 1000 on
    breast_cancer, 6 ms per step on one thread, 120 ms on two)."""
    data = prepare(cfg)
    train, test = tasks(cfg, data)
    margin_ok = cfg.loss == "logistic" and train.unit.homogeneity is not None

    def build():
        dyn = ParticleDynamics(train, dt=cfg.dt, drift=cfg.drift, batch_size=cfg.batch_size,
                               xi=cfg.xi, beta=cfg.beta, lam=cfg.lam, backend=cfg.backend)
        gen = torch.Generator().manual_seed(cfg.seed)
        theta = initial_theta(cfg, train.unit, gen).to(dtype_of(cfg))
        return dyn, dyn.init(theta, generator=gen)

    phase = simulation_phase(cfg, build, n_mc=1, risk_inf=None,
                             extra=lambda st: extra_columns(st, train, test, data["classification"],
                                                            margin_ok))
    arrays = {"param_names": np.array(train.param_names)}
    if (len(data["y"]) + len(data["y_test"])) * (data["X"].shape[1] + 1) <= MAX_SAVED_NUMBERS:
        arrays.update({"data_X": data["X"], "data_Y": data["y"], "test_X": data["X_test"],
                       "test_Y": data["y_test"]})
    return Plan(phases=lambda shared: [phase], arrays=arrays, threads=1,
                record={"task": train.to_dict(), "data": data["record"]})


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


def sweep_table(sweep_dir, columns=("test_error", "margin", "risk", "test_risk"), *,
                n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """One row per N of a finished ``meanfield sweep dataset`` (points with status ok): the
    final value of each metrics.csv column in ``columns`` (the last row of each run), seed
    mean and 95 % percentile bootstrap interval of the mean over the seeds (and other grid
    keys) at that N: {"N", "seeds", "<col>", "<col>_lo", "<col>_hi"}; columns a run lacks
    are NaN.  The README's breast_cancer table is this function's output."""
    from .. import io

    d = Path(sweep_dir)
    if not (d / "summary.csv").exists():
        raise ConfigError(f"{d} is not a sweep directory (no summary.csv)")
    with open(d / "summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    by_n: dict = {}
    for r in summary:
        if r.get("status") != "ok":
            continue
        m = io.read_metrics(d / r["run"] / io.METRICS)
        by_n.setdefault(int(float(r["N"])), []).append(
            {c: float(m[c][-1]) if c in m else math.nan for c in columns})
    rng = np.random.default_rng(seed)
    out = []
    for N in sorted(by_n):
        row = {"N": N, "seeds": len(by_n[N])}
        for c in columns:
            v = np.array([p[c] for p in by_n[N]])
            row[c] = float(v.mean())
            if len(v) > 1 and np.isfinite(v).all():
                means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
                row[f"{c}_lo"], row[f"{c}_hi"] = (float(np.quantile(means, 0.025)),
                                                  float(np.quantile(means, 0.975)))
            else:
                row[f"{c}_lo"] = row[f"{c}_hi"] = math.nan
        out.append(row)
    return out


def plot(run_dir, coords=None) -> list[Path]:
    """figures/dataset.png (train and test risk, test error, margin against t, each from
    metrics.csv) beside ``plotting.plot_run``'s risk, diagnostics, particles and histograms."""
    from .. import io
    from ..plotting import pyplot, plot_run, save_figure

    run_dir = Path(run_dir)
    out = plot_run(run_dir, coords)
    m = io.read_metrics(run_dir / io.METRICS)
    panels = [("risk", [("risk", "train"), ("test_risk", "test")], "risk (no ½)"),
              ("error", [("train_accuracy", "train"), ("test_error", "test")], "classification error"),
              ("margin", [("margin", "train")], "normalised margin min y f / ∫|θ|² dρ")]
    panels = [p for p in panels if any(k in m for k, _ in p[1])]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.3), dpi=120, squeeze=False)
    t = m["t"]
    for ax, (kind, series, label) in zip(axes[0], panels):
        for k, lab in series:
            if k not in m:
                continue
            y = 1.0 - m[k] if k == "train_accuracy" else m[k]
            ax.plot(t, y, color="C0" if lab == "train" else "C1", label=lab)
        if kind == "risk" and np.all(m["risk"] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("t (t = k·dt)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    out.append(save_figure(fig, run_dir / io.FIGURES / "dataset.png"))
    return out


FIGURES = plot
