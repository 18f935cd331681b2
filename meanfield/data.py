"""Data sets for the ``dataset`` experiment: reading, checking, labels, split and scaling.

A data spec is an ``.npz`` file with arrays ``X`` [n, d] and ``y`` [n]; a ``.csv`` file
whose last column is y (one header line optional; every other field a number); or
``sklearn:NAME`` for the data sets scikit-learn ships (:data:`SKLEARN`): ``breast_cancer``
(569 × 30, malignant −1 / benign +1), ``digitsAB`` (two digits A ≠ B of the 8 × 8 digits,
A ↦ −1, B ↦ +1, e.g. ``digits01``), ``irisAB`` and ``wineAB`` (two of the three classes
0, 1, 2) and ``diabetes`` (442 × 10, a regression).

:func:`load` reads and checks a spec (every problem a one-line ``ConfigError``);
:func:`labels` maps binary labels to ±1; :func:`split` holds out a stratified test split;
:func:`standardize` centres and scales by the training split; :func:`fingerprint` is the
SHA-256 of the data as read.  Arrays are numpy float64; nothing here knows about particles.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from .errors import ConfigError

SKLEARN = ("breast_cancer", "diabetes", "digitsAB", "irisAB", "wineAB")


# ---- reading ---------------------------------------------------------------------------------
_CACHE: dict = {}


def load(spec: str):
    """(X [n, d] float64, y [n] float64, info) from a data spec (module docstring), checked
    (:func:`check`): ConfigError naming the problem for a missing or unreadable file, an
    unknown sklearn name, wrong shapes, non-numeric or non-finite entries, or fewer than 2
    points.  info holds "source" and, when known, "label_map" and "columns".  Files are
    cached by (path, size, mtime), scikit-learn sets by name (at most 9 entries); callers get
    copies."""
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
        X, y, info = load_sklearn(spec[len("sklearn:"):]) if spec.startswith("sklearn:") else load_file(path)
        check(X, y, spec)
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


def load_sklearn(name: str):
    """(X [n, d], y [n] float64, info) of the scikit-learn data set ``NAME`` of
    ``sklearn:NAME`` (module docstring): breast_cancer (malignant −1, benign +1), diabetes
    (a regression), digitsAB / irisAB / wineAB (classes A ↦ −1, B ↦ +1); info holds
    "source" and, for classifications, "label_map".  ConfigError for any other name."""
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


def load_file(path: Path):
    """(X, y, info) of a ``.npz`` (:func:`load_npz`) or ``.csv`` (:func:`load_csv`) file;
    ConfigError for any other suffix."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".csv":
        return load_csv(path)
    raise ConfigError(f"data file {path} must end in .npz or .csv (or use sklearn:NAME)")


def load_npz(path: Path):
    """(X [n, d], y [n] float64, {"source"}) from an ``.npz`` archive with arrays ``X`` and
    ``y`` (or ``Y``; [n, 1] is flattened), numeric or boolean.  ConfigError for an unreadable
    archive, missing arrays, non-numeric dtypes or mismatched shapes."""
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


def load_csv(path: Path):
    """(X [n, d], y [n] float64, info) from a ``.csv`` file whose last column is y: blank
    lines skipped, one header line allowed (kept as info["columns"]), every other field a
    number and every row as wide as the first.  ConfigError naming the line (and column) of
    the first problem, for fewer than two columns or for no data rows."""
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


def check(X, y, spec: str) -> None:
    """ConfigError unless X [n, d] and y [n] hold at least 2 points, at least one feature and
    only finite entries (the message counts the non-finite ones and names the first row)."""
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


def fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """The SHA-256 hex digest of the data as read: X's bytes then y's (C order, float64 as
    given), so that a changed file can be told from the one a run used."""
    return hashlib.sha256(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()


def standardize(X_train, X_test, y_train, y_test, *, targets: bool):
    """(X_train, X_test, y_train, y_test, record): every feature centred and scaled by the
    training split's mean and standard deviation (constant features only centred), and with
    ``targets`` (a regression) y the same way by y_train's; record holds "x_mean", "x_std"
    [d] (lists) and, with ``targets``, "y_mean", "y_std" (for config.json)."""
    mu, sd = X_train.mean(0), X_train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    X_train, X_test = (X_train - mu) / sd, (X_test - mu) / sd
    record = {"x_mean": mu.tolist(), "x_std": sd.tolist()}
    if targets:
        ym, ys = float(y_train.mean()), float(y_train.std()) or 1.0
        y_train, y_test = (y_train - ym) / ys, (y_test - ym) / ys
        record["y_mean"], record["y_std"] = ym, ys
    return X_train, X_test, y_train, y_test, record


def digits_split(n_test: int, seed: int):
    """scikit-learn's 8×8 digits (1797 images, pixels 0…16) as pixels/16, split at random by
    ``seed``: (X_train [1797 − n_test, 64], y_train, X_test [n_test, 64], y_test), float64
    pixels centred on the training mean and long labels 0…9 (torch tensors)."""
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = torch.as_tensor(X / 16.0, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.long)
    if not 1 <= n_test < len(X):
        raise ConfigError(f"n_test must lie in 1..{len(X) - 1}, got {n_test}")
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    te, tr = perm[:n_test], perm[n_test:]
    Xc = X - X[tr].mean(0)
    return Xc[tr], y[tr], Xc[te], y[te]
