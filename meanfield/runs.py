"""A run directory as an object: ``load_run(DIR)`` (docs/design.md §3 for the directory).

    from meanfield.runs import load_run
    run = load_run("runs/bc")                 # every file verified first (runner.load_run)
    run.config, run.unit, run.metrics         # the Config, the Unit, metrics.csv as arrays
    run.measure(-1)                           # ParticleMeasure of the last snapshot
    net = run.to_module()                     # nn.Sequential in the data's own units
    net(torch.as_tensor(X_raw, dtype=torch.float32))   # predictions in y's units
    run.export("model.pt")                    # the same network, loadable without meanfield

``meanfield`` itself does not re-export it: the package imports only the base rooms
(docs/design.md §2), and the run machinery this module needs (``io``, ``runner``) imports the
package for its version, which the import rules count as a cycle.

It reads runs of **one two-layer simulation** (teacher-student, dataset, an experiment of
your own whose single phase records particles): every snapshot θ [K, (B,) N, D] of
particles.npz is a measure of ``run.unit``.  Runs of several phases (n-scaling, cb-relu2d,
lazy-vs-meanfield …) and ResNet runs are refused in one line naming what reads them
(``meanfield.io.read_snapshots``, ``meanfield.to_module``,
``meanfield.models.resnet_torch.to_module``).

**The network in the data's units.**  What the particles describe is the run's model

    F(x_s) = c + α (f(x_s; ρ_k) − f(x_s; ρ_0))   (centred)   or   c + α f(x_s; ρ_k),

f = Σ_i m_i φ(·; θ_i) (docs/design.md §1), α the output scale (1 unless the config says),
c the fixed offset of a network the run started from (``--set init=FILE``, 0 otherwise),
and x_s, F in the run's units: the ``dataset`` experiment standardises the features,
x_s = (x − μ_x)/σ_x, and regression targets, y_s = (y − μ_y)/σ_y (config.json's "data").
:meth:`Run.to_module` folds all of it into one plain
``nn.Sequential(nn.Linear(d, N'), act, nn.Linear(N', 1))`` of the data's own units,

    hidden  w_j/σ_x,  b_j − ⟨w_j/σ_x, μ_x⟩;   output  σ_y α m_j a_j,  σ_y c + μ_y

(N' = 2N when centred: the reference units carry −α m_j a_j^0), so that
``to_module()(x)`` is σ_y F((x − μ_x)/σ_x) + μ_y to float rounding.  :meth:`Run.export`
(``meanfield export DIR --out model.pt``) saves exactly that module's tensors with
``torch.save`` in a dict that ``torch.load(path, weights_only=True)`` reads with torch
alone (``models.twolayer_torch.export_payload``); the README's "Your network, your data"
has the five lines that rebuild it, and ``--set init=model.pt`` starts a new run from it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import io
from .errors import ConfigError
from .measure import ParticleMeasure
from .models.activations import get_activation
from .models.twolayer_torch import export_payload, sequential_of
from .models.units import Unit


def load_run(run_dir) -> "Run":
    """The :class:`Run` of ``run_dir``, after ``runner.load_run`` has verified every file
    (config.json parses into the experiment's Config, checksums of the checkpoint, records
    and npz files).  ``ConfigError`` in one line for a missing or corrupted directory, a
    ResNet or multi-phase run (naming what reads those instead) or a run without snapshots."""
    from . import runner
    from .experiments.config import ResNetConfig, TwoLayerConfig

    run_dir = Path(run_dir)
    exp, cfg, ck = runner.load_run(run_dir)
    rec = io.load_run_config(run_dir)
    name = rec["experiment"]
    if isinstance(cfg, ResNetConfig):
        raise ConfigError(f"{run_dir} is a {name} run (a ResNet): load_run reads two-layer runs; "
                          "read its snapshots with meanfield.io.read_snapshots(DIR) ([K, L·M, P]) and "
                          "build its module with meanfield.models.resnet_torch.to_module")
    unit_rec = (rec.get("task") or {}).get("unit") if isinstance(rec.get("task"), dict) else None
    if not isinstance(cfg, TwoLayerConfig) or not isinstance(unit_rec, dict):
        raise ConfigError(f"{run_dir} is a {name} run, not a two-layer network's: load_run reads "
                          "two-layer runs; read its files with meanfield.io.read_snapshots(DIR) and "
                          "meanfield.io.read_metrics")
    prog = runner.progress_of(ck)
    snaps = io.read_snapshots(run_dir) if (run_dir / io.PARTICLES).exists() else []
    phases = prog["phases"] if prog else len(snaps)
    if phases > 1 or len(snaps) > 1:
        keys = ", ".join(s["phase"] for s in snaps[:4]) + (" …" if len(snaps) > 4 else "")
        raise ConfigError(f"{run_dir} ({name}) has {max(phases, len(snaps))} phases ({keys}); load_run "
                          "reads runs of one simulation: read a phase's snapshots with "
                          "meanfield.io.read_snapshots(DIR) and build its network with "
                          "meanfield.to_module(unit, theta)")
    if not snaps or len(snaps[0]["t"]) == 0:
        raise ConfigError(f"{run_dir} has no particle snapshot yet ({runner.describe_progress(prog)}); "
                          f"continue it with `meanfield resume {run_dir}`")
    return Run(run_dir, exp, cfg, rec, _unit(unit_rec), snaps[0], prog)


def _unit(u: dict) -> Unit:
    act = dict(u["activation"])
    return Unit(int(u["d"]), get_activation(act.pop("name"), **act),
                output_weight=bool(u["output_weight"]), bias=bool(u["bias"]))


class Run:
    """A two-layer run directory, read (build it with :func:`load_run`).

    Attributes: ``path``; ``experiment`` (its name) and ``module`` (its declaration);
    ``config`` (the experiment's frozen Config); ``record`` (config.json as a dict);
    ``unit`` (:class:`~meanfield.models.units.Unit`, θ's layout [a, w_0 … w_{d−1}, b]);
    ``progress`` (the checkpoint's progress, None before the first); ``steps`` [K] and
    ``times`` [K] of the snapshots.  Properties: :attr:`metrics`, :attr:`standardization`,
    :attr:`offset`.  Methods: :meth:`measure`, :meth:`task`, :meth:`data`,
    :meth:`to_module`, :meth:`export`.  Nothing is loaded twice: snapshots are read once."""

    def __init__(self, path, module, config, record, unit, snapshots, progress):
        self.path = Path(path)
        self.module = module
        self.experiment = record["experiment"]
        self.config = config
        self.record = record
        self.unit = unit
        self.progress = progress
        self._theta = snapshots["theta"]                 # [K, N, D] or [K, B, N, D]
        self.steps = np.asarray(snapshots["step"])
        self.times = np.asarray(snapshots["t"])
        if self._theta.shape[-1] != unit.D:
            raise ConfigError(f"{self.path}: snapshots have {self._theta.shape[-1]} parameters per "
                              f"particle but the recorded unit has D={unit.D}")

    def __repr__(self):
        return (f"Run({str(self.path)!r}, {self.experiment}, N={self._theta.shape[-2]}, d={self.unit.d}, "
                f"{len(self.steps)} snapshots to step {int(self.steps[-1])})")

    # ---- what the run recorded -----------------------------------------------------------
    @property
    def metrics(self) -> dict:
        """metrics.csv as {column: float array [rows]} (step, t, risk, …); {} before the first
        row (``io.read_metrics``)."""
        p = self.path / io.METRICS
        return io.read_metrics(p) if p.exists() else {}

    @property
    def replicas(self) -> int:
        """B, the independent systems of the run (1 unless ``replicas`` was set)."""
        return 1 if self._theta.ndim == 3 else self._theta.shape[1]

    def snapshot_index(self, k: int | None = None, step: int | None = None) -> int:
        """The index in [0, K) of snapshot k (Python indexing; None: the last) or of the
        snapshot at ``step``; ``ConfigError`` naming the snapshots there are otherwise."""
        K = len(self.steps)
        k = -1 if k is None else k
        if step is not None:
            hits = np.flatnonzero(self.steps == step)
            if not len(hits):
                raise ConfigError(f"{self.path} has no snapshot at step {step}; its snapshots are at "
                                  f"steps {_short(self.steps)}")
            return int(hits[0])
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -K <= k < K:
            raise ConfigError(f"snapshot index k must be an integer in [{-K}, {K - 1}] ({K} snapshots), "
                              f"got {k!r}")
        return int(k) % K

    def measure(self, k: int | None = None, *, step: int | None = None, replica: int | None = 0) -> ParticleMeasure:
        """ρ at snapshot k (Python indexing; None or -1: the last) or at the snapshot of ``step``:
        positions [N, D] of ``replica`` (None: all, [B, N, D]) in the run's dtype, uniform
        weights, ``param_names`` the unit's.  ``ConfigError`` for an index, step or replica
        the run does not have."""
        th = torch.as_tensor(np.array(self._theta[self.snapshot_index(k, step)]))
        if th.dim() == 3 and replica is not None:
            th = th[self._replica(replica)]
        elif replica not in (None, 0):
            self._replica(replica)
        return ParticleMeasure(th, param_names=tuple(self.unit.param_names))

    def _replica(self, r) -> int:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < self.replicas:
            raise ConfigError(f"replica must be an integer in [0, {self.replicas - 1}], got {r!r}")
        return int(r)

    @property
    def standardization(self) -> dict | None:
        """The run's scaling of the data (config.json's "data"): {"x_mean" [d], "x_std" [d]
        (float64 arrays), and for a regression "y_mean", "y_std" (floats)}, or None when the
        run sees the data as they are (teacher-student, ``standardize = false``)."""
        data = self.record.get("data")
        if not isinstance(data, dict) or "x_mean" not in data:
            return None
        out = {"x_mean": np.asarray(data["x_mean"], dtype=np.float64),
               "x_std": np.asarray(data["x_std"], dtype=np.float64)}
        if "y_mean" in data:
            out.update(y_mean=float(data["y_mean"]), y_std=float(data["y_std"]))
        return out

    @property
    def offset(self) -> float:
        """c, the fixed offset added to the network's output in the run's units: the output
        bias of the network the run started from (``init``; config.json's "init"), else 0."""
        init = self.record.get("init")
        return float(init.get("offset", 0.0)) if isinstance(init, dict) else 0.0

    # ---- rebuilt on demand -----------------------------------------------------------------
    def task(self):
        """The task the particles were trained on, rebuilt by the experiment's plan from the
        config (the first phase's dynamics' task; a ``ScaledTask`` unwrapped to the task it
        scales): teacher-student's ``TeacherStudent``, dataset's training ``FiniteDataset`` in
        the run's standardised units (with an ``init`` offset c its labels are y_s − c).
        Input files (data, init) are read again, so a changed file is a ``ConfigError``."""
        from .runner import check_record

        plan = self.module.plan(self.config)
        check_record(self.path, plan)
        dyn, _ = plan.phases({})[0].build()
        task = dyn.task
        return getattr(task, "inner", task)

    def data(self) -> dict:
        """The run's data in the data's own units (experiments that record "data" and declare
        ``prepare``, i.e. dataset): {"X" [n_train, d], "y" [n_train], "X_test", "y_test"}
        (numpy float64; labels after the run's label map, ±1 for classification), read again
        from the source and checked against config.json's SHA-256.  ``ConfigError`` for other
        runs or changed data."""
        prepare = getattr(self.module, "prepare", None)
        recorded = self.record.get("data")
        if prepare is None or not isinstance(recorded, dict):
            raise ConfigError(f"{self.path} is a {self.experiment} run: it has no data of its own "
                              "(its task is run.task())")
        prep = prepare(self.config)
        if prep["record"].get("sha256") != recorded.get("sha256"):
            raise ConfigError(f"{self.path}: the data of {self.config.data!r} changed since the run "
                              "(SHA-256 differs from config.json's)")
        return {k: prep[f"{k}_data"] for k in ("X", "y", "X_test", "y_test")}

    def network(self, k: int | None = None, *, step: int | None = None, replica: int = 0):
        """(W [N', d], b [N'] or None, c [N'], offset or None) in float64: the hidden weights,
        hidden biases, output weights and output bias of the run's network at snapshot k in
        the data's own units (module docstring: α, centring, the offset and the
        standardisation folded in)."""
        i = self.snapshot_index(k, step)
        r = self._replica(replica)
        th = self.measure(i, replica=r).positions.double()
        alpha = float(getattr(self.config, "alpha", 1.0))
        parts = [(th, alpha)]
        if getattr(self.config, "centred", False):
            if self.steps[0] != 0:
                raise ConfigError(f"{self.path} is centred (f − f_0) but has no snapshot of step 0 "
                                  "to centre on")
            parts.append((self.measure(0, replica=r).positions.double(), -alpha))
        W, b, c = [], [], []
        for theta, scale in parts:
            a, w, bb = self.unit.split(theta)
            m = torch.full((theta.shape[0],), 1.0 / theta.shape[0], dtype=torch.float64)
            W.append(w)
            b.append(bb if bb is not None else torch.zeros(theta.shape[0], dtype=torch.float64))
            c.append(scale * (m * a if a is not None else m))
        W, b, c = torch.cat(W), torch.cat(b), torch.cat(c)
        offset = self.offset
        has_b, has_off = self.unit.bias, offset != 0.0
        st = self.standardization
        if st is not None:
            mu, sd = torch.as_tensor(st["x_mean"]), torch.as_tensor(st["x_std"])
            W = W / sd
            b = b - W @ mu
            has_b = True
            if "y_mean" in st:
                c = c * st["y_std"]
                offset = offset * st["y_std"] + st["y_mean"]
                has_off = True
        return W, (b if has_b else None), c, (offset if has_off else None)

    def to_module(self, k: int | None = None, *, step: int | None = None, replica: int = 0,
                  dtype=None) -> torch.nn.Sequential:
        """The run's network at snapshot k (or ``step``) as a plain
        ``nn.Sequential(nn.Linear(d, N'), act, nn.Linear(N', 1))`` whose forward takes inputs
        x [..., d] in the data's own units and returns predictions [..., 1] in y's units
        (module docstring: standardisation, α, centring and the offset folded in; composed
        in float64, parameters in ``dtype``, default the run's).  ``mf.from_module`` reads it
        (``offset=True`` for its output bias)."""
        W, b, c, offset = self.network(k, step=step, replica=replica)
        dtype = dtype or torch.as_tensor(np.array(self._theta[:1])).dtype
        return sequential_of(self.unit.activation, W, b, c, offset=offset, dtype=dtype)

    def export(self, out, k: int | None = None, *, step: int | None = None, replica: int = 0,
               dtype=None) -> Path:
        """Write :meth:`to_module`'s network to ``out`` with ``torch.save`` (atomically): a
        dict that ``torch.load(out, weights_only=True)`` reads with torch alone
        (``models.twolayer_torch.export_payload``: layout, activation, state dict) plus where
        it came from ("run", "experiment", "step", "t", "replica") and the standardisation
        already folded in ("standardization", None when none).  ``ConfigError`` when ``out``
        is a directory or its folder does not exist; returns ``out``."""
        import io as _io
        from importlib import metadata

        try:
            version = metadata.version("meanfield")
        except metadata.PackageNotFoundError:      # a source tree that is not installed
            version = "unknown"
        out = Path(out)
        if out.is_dir():
            raise ConfigError(f"{out} is a directory; name the file to write, e.g. {out / 'model.pt'}")
        if not out.parent.is_dir():
            raise ConfigError(f"the folder of {out} does not exist")
        i = self.snapshot_index(k, step)
        seq = self.to_module(i, replica=replica, dtype=dtype)
        st = self.standardization
        info = {"run": str(self.path), "experiment": self.experiment, "step": int(self.steps[i]),
                "t": float(self.times[i]), "replica": int(replica), "meanfield_version": version,
                "standardization": None if st is None else
                {k2: (v.tolist() if isinstance(v, np.ndarray) else v) for k2, v in st.items()}}
        buf = _io.BytesIO()
        torch.save(export_payload(seq, self.unit.activation, **info), buf)
        io.atomic_write_bytes(out, buf.getvalue())
        return out


def _short(steps) -> str:
    s = [int(v) for v in steps]
    return ", ".join(map(str, s)) if len(s) <= 6 else f"{s[0]}, {s[1]}, …, {s[-1]}"


__all__ = ["Run", "load_run"]
