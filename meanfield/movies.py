"""Movies of runs: the flows this library simulates, drawn from a run directory's snapshots.

``meanfield animate DIR [--what VIEW] [--out FILE.gif|.mp4] [--fps F] [--frames K] [--dpi D]``
and :func:`animate` (a matplotlib ``FuncAnimation``; ``anim.to_jshtml()`` shows it inline in a
notebook) read the snapshots the runner saved (``io.read_snapshots``: one layout for every
experiment) and the run's other files; nothing is simulated.  The views, per experiment (the
first is the default):

* ``cloud``   (teacher-student, n-scaling, dataset) — the particles (|w_i|, a_i) of the first replica,
  the teacher's units as stars, and the risk curve R(t) growing beside them;
* ``plane``   (teacher-student, n-scaling, cb-relu2d) — |a_i| w_i in the plane of the first two
  coordinates of w, with trails fading over the last frames, the teacher's directions as rays;
* ``radial``  (mmn-isotropic, mmn-bifurcation, chaos-rate) — the histogram of |w_i| against
  the PDE's density of |w| at the same t (pde.npz), one panel per initial law;
* ``torus``   (mfld-torus) — the particles of every run (fixed τ's, annealed, noiseless) on
  the torus with the targets, side by side at the same iteration;
* ``density`` (pde2d-teacher, pde2d-torus) — the grid density at t with the particles of the
  largest N overlaid;
* ``depth``   (resnet-limit, resnet-rkhs, resnet-digits) — the data points transported through
  the trained ResNet, the layer coordinate s ∈ [0, 1] as time (2-D projection);
* ``params``  (resnet-*) — every unit's |u| against its layer coordinate along training.

GIFs are written by Pillow (no external program); ``.mp4`` needs an ffmpeg writer (the
``movies`` extra's imageio-ffmpeg, or ffmpeg on the PATH).  Files are written to a temporary
name and renamed, so a failed render leaves nothing behind.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import io
from .errors import ConfigError

FORMATS = (".gif", ".mp4")


# ---- the data of a movie -------------------------------------------------------------------
class Run:
    """What a view reads from a run directory: ``config`` (config.json), ``experiment``,
    ``arrays`` (particles.npz), ``snaps`` (``io.read_snapshots``), ``metrics`` (metrics.csv as
    arrays, or {}), ``pde`` (pde.npz, or None), and the snapshots of the phase to show
    (``phase``: the main one).  The run directory is verified first as ``show``, ``plot`` and
    ``resume`` verify it (``runner.load_run``: config.json parses into the experiment's
    Config and agrees with the checkpoint, every checksum holds): ConfigError otherwise."""

    def __init__(self, run_dir):
        from . import runner

        self.dir = Path(run_dir)
        runner.load_run(self.dir)
        rec = io.load_run_config(self.dir)
        self.experiment = rec["experiment"]
        self.record = rec
        self.config = rec["config"]
        self.arrays = io.read_npz(self.dir / io.PARTICLES) if (self.dir / io.PARTICLES).exists() else {}
        self.snaps = io.read_snapshots(self.dir) if self.arrays else []
        mpath = self.dir / io.METRICS
        self.metrics = io.read_metrics(mpath) if mpath.exists() else {}
        ppath = self.dir / "pde.npz"
        self.pde = io.read_npz(ppath) if ppath.exists() else None
        primary = str(self.arrays["primary_phase"]) if "primary_phase" in self.arrays else None
        chosen = [s for s in self.snaps if s["phase"] == primary] or self.snaps[-1:]
        self.phase = chosen[0] if chosen else None

    @property
    def param_names(self) -> list[str]:
        """The names of θ's coordinates."""
        return [str(n) for n in self.arrays.get("param_names", [])]

    def rows_of_phase(self) -> dict:
        """The metrics rows of the shown phase: those whose columns match the key's
        ``name=value`` parts (multi-N runs: the rows of its N; "m=" names the N column)."""
        m = self.metrics
        if not m or self.phase is None:
            return m
        sel = np.ones(len(next(iter(m.values()))), dtype=bool)
        for part in self.phase["phase"].split("/"):       # "N=64", "m=20", "N=64/alpha=0.01"
            name, eq, value = part.partition("=")
            col = "N" if name == "m" else name
            if eq and col in m:
                try:
                    sel &= m[col] == float(value)
                except ValueError:
                    pass
        return {k: v[sel] for k, v in m.items()}


def _replica0(theta: np.ndarray, D: int) -> np.ndarray:
    """θ [N, D] of the first replica from a snapshot [N, D] or [B, N, D] (or more axes)."""
    th = np.asarray(theta)
    while th.ndim > 2:
        th = th[0]
    return th.reshape(-1, D) if th.shape[-1] == D else th


def frame_indices(n: int, frames: int | None) -> np.ndarray:
    """Indices of the snapshots shown: all of them, or ``frames`` spread evenly (the first
    and the last included)."""
    if frames is None or frames >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, frames).round().astype(int))


def _limits(values, pad=0.08, q=(0.5, 99.5)):
    lo, hi = np.percentile(values, q)
    span = hi - lo if hi > lo else 1.0
    return lo - pad * span, hi + pad * span


# ---- views ---------------------------------------------------------------------------------
def _cloud(run: Run, idx, plt):
    names = run.param_names
    snaps = run.phase
    D = len(names)
    w = [i for i, n in enumerate(names) if n.startswith("w")]
    a = names.index("a") if "a" in names else None
    pts = [_replica0(snaps["theta"][k], D) for k in idx]
    r = [np.linalg.norm(p[:, w], axis=-1) for p in pts]
    y = [p[:, a] if a is not None else np.ones(len(p)) for p in pts]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    sc = ax.scatter(r[0], y[0], s=6, color="C0", alpha=0.6, lw=0, label="particles (replica 0)")
    teacher = run.arrays.get("teacher_theta")
    if teacher is not None and teacher.shape[-1] == D:
        ax.scatter(np.linalg.norm(teacher[:, w], axis=-1), teacher[:, a] if a is not None else np.ones(len(teacher)),
                   s=90, marker="*", color="C3", edgecolor="k", lw=0.5, label="teacher units", zorder=3)
    allr, ally = np.concatenate(r), np.concatenate(y)
    ax.set_xlim(0, _limits(allr)[1])
    ax.set_ylim(*_limits(ally))
    ax.set_xlabel("|w|")
    ax.set_ylabel("a" if a is not None else "a ≡ 1")
    ax.legend(frameon=False, fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    m = run.rows_of_phase()
    line, dot = None, None
    if "risk" in m and "t" in m and len(m["t"]):
        t, R = m["t"], m["risk"]
        ax2.plot(t, R, color="0.85", lw=1)
        (line,) = ax2.plot([], [], color="C0", lw=1.5)
        (dot,) = ax2.plot([], [], "o", color="C0", ms=4)
        if np.all(R > 0):
            ax2.set_yscale("log")
        ax2.set_xlabel("t (MMN time)")
        ax2.set_ylabel("risk R(ρ_N)")
        ax2.grid(alpha=0.3)
    title = fig.suptitle("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()

    def update(i):
        k = idx[i]
        sc.set_offsets(np.column_stack([r[i], y[i]]))
        tk = snaps["t"][k]
        title.set_text(f"{run.experiment} ({snaps['phase']}): t = {tk:.4g}")
        if line is not None:
            sel = m["t"] <= tk + 1e-12
            line.set_data(m["t"][sel], m["risk"][sel])
            if sel.any():
                dot.set_data([m["t"][sel][-1]], [m["risk"][sel][-1]])
        return (sc,)

    return fig, update


def _plane(run: Run, idx, plt, tail: int = 8):
    names = run.param_names
    D = len(names)
    w = [i for i, n in enumerate(names) if n.startswith("w")][:2]
    a = names.index("a") if "a" in names else None
    if len(w) < 2:
        raise ConfigError(f"the plane view needs two coordinates of w; {run.experiment} has {names}")
    snaps = run.phase
    th = np.stack([_replica0(snaps["theta"][k], D) for k in range(len(snaps["t"]))])   # [K, N, D]
    scale = np.abs(th[..., a:a + 1]) if a is not None else 1.0
    P = scale * th[..., w]                                                            # [K, N, 2]
    fig, ax = plt.subplots(figsize=(5.2, 5.2))
    from matplotlib.collections import LineCollection

    trails = LineCollection([], colors="k", linewidths=0.7)
    ax.add_collection(trails)
    sc = ax.scatter(P[0, :, 0], P[0, :, 1], s=18, zorder=3)
    bx = max(1e-9, float(np.percentile(np.abs(P[idx]), 99.5))) * 1.15
    teacher, tw = run.arrays.get("teacher_theta"), run.arrays.get("teacher_weights")
    if teacher is not None and teacher.shape[-1] == D:
        for k in range(len(teacher)):
            d = teacher[k, w] / max(np.linalg.norm(teacher[k, w]), 1e-12)
            c = "C3" if tw is None or tw[k] > 0 else "C0"
            ax.plot([0, 2 * bx * d[0]], [0, 2 * bx * d[1]], "--", color=c, lw=0.7, alpha=0.7)
            ax.scatter([teacher[k, w[0]]], [teacher[k, w[1]]], marker="*", s=140, color=c,
                       edgecolor="k", lw=0.5, zorder=4)
    ax.set_xlim(-bx, bx)
    ax.set_ylim(-bx, bx)
    ax.set_aspect("equal")
    ax.set_xlabel(f"|a| {names[w[0]]}" if a is not None else names[w[0]])
    ax.set_ylabel(f"|a| {names[w[1]]}" if a is not None else names[w[1]])
    title = ax.set_title("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()

    def update(i):
        k = idx[i]
        k0 = idx[max(0, i - tail)]
        segs, alphas = [], []
        for j in range(k0, k):
            for n in range(P.shape[1]):
                segs.append(P[j:j + 2, n])
                alphas.append((j - k0 + 1) / max(1, k - k0))
        trails.set_segments(segs)
        trails.set_alpha(None)
        trails.set_color([(0, 0, 0, 0.6 * al) for al in alphas])
        sc.set_offsets(P[k])
        if a is not None:
            sc.set_color(np.where(th[k, :, a] > 0, "C3", "C0"))
        title.set_text(f"{run.experiment} ({snaps['phase']}): t = {snaps['t'][k]:.4g}")
        return (sc,)

    return fig, update


def _radial(run: Run, idx, plt):
    if run.pde is None:
        raise ConfigError(f"{run.dir} has no pde.npz: the radial view draws the PDE beside the particles")
    snaps = run.phase
    z = run.pde
    pt, r, dens = z["t"], z["r"], z["density"]
    law = z["law_index"] if "law_index" in z else np.zeros(1, int)
    theta = snaps["theta"]
    # snapshots [K, N, D] (one replica) or [K, B, N, D]
    per_rep = theta if theta.ndim == 4 else theta[:, None]
    laws = sorted({int(x) for x in law[: per_rep.shape[1]]})
    reps = [list(law[: per_rep.shape[1]]).index(L) for L in laws]
    h = r[1] - r[0]
    faces = np.append(r - h / 2, r[-1] + h / 2)
    radii = {b: [np.linalg.norm(per_rep[k, b], axis=-1) for k in idx] for b in reps}
    rmax = max(float(np.percentile(np.concatenate(v), 99.8)) for v in radii.values()) * 1.1
    bins = np.linspace(0, rmax, 50)
    fig, axes = plt.subplots(1, len(reps), figsize=(4.6 * len(reps), 3.6), squeeze=False)
    artists = []
    for ax, b, L in zip(axes[0], reps, laws):
        counts, _ = np.histogram(radii[b][0], bins=bins, density=True)
        bars = ax.stairs(counts, bins, fill=True, color=f"C{L}", alpha=0.45, label="particles")
        kp = int(np.argmin(np.abs(pt - snaps["t"][idx[0]])))
        curve = ax.stairs(dens[L, kp], faces, color="k", lw=1.3, label="PDE")
        ax.set_xlim(0, rmax)
        ax.set_xlabel("|w|")
        ax.set_ylabel("density")
        ax.legend(frameon=False, fontsize=7)
        ax.grid(alpha=0.3)
        artists.append((ax, b, L, bars, curve))
    title = fig.suptitle("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()
    bulk_bins, bulk_r = bins[:-1] > 0.1 * rmax, r > 0.1 * rmax

    def update(i):
        k = idx[i]
        kp = int(np.argmin(np.abs(pt - snaps["t"][k])))
        for ax, b, L, bars, curve in artists:
            counts, _ = np.histogram(radii[b][i], bins=bins, density=True)
            bars.set_data(counts, bins)
            curve.set_data(dens[L, kp], faces)
            # the vertical scale of this frame's bulk: a spike of units at |w| ≈ 0 (a collapse
            # onto w = 0) runs off the top rather than flattening the rest
            top = max(float(counts[bulk_bins].max(initial=0)), float(dens[L, kp][bulk_r].max(initial=0)))
            ax.set_ylim(0, 1.25 * top if top > 0 else 1.0)
        title.set_text(f"{run.experiment} ({snaps['phase']}): |w| at t = {snaps['t'][k]:.4g} "
                       f"(PDE at t = {pt[kp]:.4g})")
        return ()

    return fig, update


def _torus(run: Run, idx, plt):
    labels = [str(s) for s in run.arrays.get("labels", [])]
    phases = run.snaps
    K = min(len(s["t"]) for s in phases)
    targets = run.arrays.get("targets")
    fig, axes = plt.subplots(1, len(phases), figsize=(2.6 * len(phases), 2.9), squeeze=False)
    scs = []
    for j, (ax, s) in enumerate(zip(axes[0], phases)):
        p = np.mod(_replica0(s["theta"][0], 2), 2 * math.pi)
        scs.append(ax.scatter(p[:, 0], p[:, 1], s=6, color="k"))
        if targets is not None:
            ax.scatter(targets[:, 0], targets[:, 1], s=30, color="C3")
        ax.set_xlim(0, 2 * math.pi)
        ax.set_ylim(0, 2 * math.pi)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(labels[j] if j < len(labels) else s["phase"], fontsize=8)
    title = fig.suptitle("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()
    idx = idx[idx < K]

    def update(i):
        k = idx[i]
        for sc, s in zip(scs, phases):
            sc.set_offsets(np.mod(_replica0(s["theta"][k], 2), 2 * math.pi))
        title.set_text(f"{run.experiment}: iteration {int(phases[0]['step'][k])}, t = {phases[0]['t'][k]:.4g}")
        return tuple(scs)

    return fig, update


def _density(run: Run, idx, plt):
    if run.pde is None:
        raise ConfigError(f"{run.dir} has no pde.npz: the density view draws the grid density")
    z = run.pde
    pt, x, y, dens = z["t"], z["x"], z["y"], z["density"]
    snaps = run.phase
    hx, hy = x[1] - x[0], y[1] - y[0]
    xf = np.concatenate([x - hx / 2, [x[-1] + hx / 2]])
    yf = np.concatenate([y - hy / 2, [y[-1] + hy / 2]])
    period = 2 * math.pi if run.experiment == "pde2d-torus" else None
    fig, ax = plt.subplots(figsize=(5, 4.6))
    kp = int(np.argmin(np.abs(pt - snaps["t"][idx[0]])))
    mesh = ax.pcolormesh(xf, yf, dens[kp].T, cmap="viridis", shading="flat",
                         vmin=0, vmax=float(np.percentile(dens, 99.9)))
    fig.colorbar(mesh, ax=ax, fraction=0.046)

    def pts(k):
        p = _replica0(snaps["theta"][k], 2)[:1000]
        return np.mod(p, period) if period else p

    sc = ax.scatter(*pts(idx[0]).T, s=2, color="white", alpha=0.7)
    extra = run.arrays.get("teacher_theta", run.arrays.get("targets"))
    if extra is not None:
        ax.plot(extra[:, 0], extra[:, 1], "x", color="red", ms=7, mew=1.5)
    ax.set_xlim(xf[0], xf[-1])
    ax.set_ylim(yf[0], yf[-1])
    ax.set_aspect("equal")
    title = ax.set_title("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()

    def update(i):
        k = idx[i]
        kp = int(np.argmin(np.abs(pt - snaps["t"][k])))
        mesh.set_array(dens[kp].T.ravel())
        sc.set_offsets(pts(k))
        title.set_text(f"{run.experiment} ({snaps['phase']}, seed 0): t = {snaps['t'][k]:.4g}")
        return (mesh, sc)

    return fig, update


def _resnet_model(run: Run):
    """The ResNet of a run, from config.json's record and particles.npz's A and B."""
    import torch

    from .models.resnet import ResNet

    spec = run.record.get("model")
    if not spec or "embedding_A" not in run.arrays:
        raise ConfigError(f"{run.dir} holds no ResNet model (config.json 'model', particles.npz A, B)")
    act = spec["unit"]["activation"]
    act = act.get("name", act) if isinstance(act, dict) else act
    return ResNet(torch.as_tensor(run.arrays["embedding_A"]), torch.as_tensor(run.arrays["readout_B"]),
                  activation=act, bias=spec["unit"].get("bias", True), loss=spec["loss"],
                  scheme=spec["scheme"], substeps=spec["substeps"], depth=spec.get("depth"))


def _depth(run: Run, idx, plt):
    import torch

    if "data_X" not in run.arrays:
        raise ConfigError(f"{run.dir} has no data_X in particles.npz to transport through depth")
    model = _resnet_model(run)
    X = torch.as_tensor(run.arrays["data_X"], dtype=torch.float64)
    labels = run.arrays.get("data_Y")
    snaps = run.phase
    theta = torch.as_tensor(np.asarray(snaps["theta"][-1]), dtype=torch.float64)      # [N, P]
    layer = torch.as_tensor(run.arrays["layer"], dtype=torch.float64)
    layers = model.layers(layer, theta.shape[-2])
    _, xs = model.forward(theta[None], None, layers, X, states=True)
    H = torch.stack([x[0] for x in xs]).numpy()                                     # [L + 1, n, D]
    # a fixed 2-D projection: the top principal directions of the states at s = 1
    Hc = H[-1] - H[-1].mean(0)
    _, _, Vt = np.linalg.svd(Hc, full_matrices=False)
    Q = H @ Vt[:2].T                                                                # [L + 1, n, 2]
    s = np.arange(len(H)) / (len(H) - 1)
    frames = np.arange(len(H))
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    if labels is not None and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        colors = plt.cm.tab10(labels % 10)
    elif labels is not None:
        c = np.asarray(labels).reshape(len(X), -1)[:, 0]
        colors = plt.cm.coolwarm((c - c.min()) / (np.ptp(c) or 1))
    else:
        colors = "C0"
    sc = ax.scatter(Q[0, :, 0], Q[0, :, 1], s=10, c=colors)
    ax.set_xlim(*_limits(Q[..., 0]))
    ax.set_ylim(*_limits(Q[..., 1]))
    ax.set_xlabel("hidden state, 1st principal direction at s = 1")
    ax.set_ylabel("2nd principal direction")
    ax.grid(alpha=0.3)
    title = ax.set_title("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()

    def update(i):
        sc.set_offsets(Q[frames[i]])
        title.set_text(f"{run.experiment} ({snaps['phase']}, trained, t = {snaps['t'][-1]:.4g}): "
                       f"depth s = {s[frames[i]]:.3g}")
        return (sc,)

    return fig, update, frames


def _params(run: Run, idx, plt):
    names = run.param_names
    u = [i for i, n in enumerate(names) if n.startswith("u")]
    snaps = run.phase
    layer = np.asarray(run.arrays["layer"])
    U = [np.linalg.norm(np.asarray(snaps["theta"][k]).reshape(-1, len(names))[:, u], axis=-1) for k in idx]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(layer)) / max(1, len(np.unique(layer)))
    sc = ax.scatter(layer + jitter, U[0], s=4, alpha=0.5, lw=0)
    ax.set_ylim(0, _limits(np.concatenate(U))[1])
    ax.set_xlabel("layer coordinate s")
    ax.set_ylabel("|u| (residual weight of each unit)")
    ax.grid(alpha=0.3)
    title = ax.set_title("t", fontsize=9)     # a placeholder: tight_layout keeps room for the title
    fig.tight_layout()

    def update(i):
        sc.set_offsets(np.column_stack([layer + jitter, U[i]]))
        title.set_text(f"{run.experiment} ({snaps['phase']}): t = {snaps['t'][idx[i]]:.4g}")
        return (sc,)

    return fig, update


_BUILDERS = {"cloud": _cloud, "plane": _plane, "radial": _radial, "torus": _torus,
             "density": _density, "depth": _depth, "params": _params}


# ---- the API ---------------------------------------------------------------------------------
def experiment_views() -> dict:
    """{experiment: its views} of every registered experiment with a movie (each declares
    ``VIEWS``, the first its default)."""
    from .experiments import get_experiment, names, views_of

    return {n: views_of(get_experiment(n)) for n in names() if views_of(get_experiment(n))}


def views(experiment: str) -> tuple[str, ...]:
    """The movie views of an experiment, the default first (``ConfigError`` when it has none
    or declares a view this module does not draw)."""
    from .experiments import get_experiment, views_of

    names = views_of(get_experiment(experiment))
    if not names:
        raise ConfigError(f"{experiment} has no movie (movies exist for "
                          f"{', '.join(experiment_views())})")
    unknown = [v for v in names if v not in _BUILDERS]
    if unknown:
        raise ConfigError(f"{experiment} declares the view {unknown[0]!r}, which meanfield.movies does "
                          f"not draw (views: {', '.join(_BUILDERS)})")
    return names


def animate(run_dir, what: str | None = None, *, frames: int | None = None, fps: float = 10,
            dpi: float = 100, run: Run | None = None):
    """A matplotlib ``FuncAnimation`` of the run in ``run_dir`` (module docstring): ``what``
    one of :func:`views` (default: the first), ``frames`` the number of snapshots shown
    (spread evenly; default all), ``fps`` frames per second.  ConfigError on an unknown
    view or fewer than two snapshots."""
    import matplotlib
    from matplotlib import animation

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt

    run = run or Run(run_dir)
    names = views(run.experiment)
    what = what or names[0]
    if what not in names:
        raise ConfigError(f"unknown view {what!r} for {run.experiment}; choose one of {', '.join(names)}")
    if frames is not None and frames < 2:
        raise ConfigError(f"--frames must be >= 2, got {frames}")
    if what != "depth":
        n = len(run.phase["t"]) if run.phase is not None else 0
        if what == "torus" and run.snaps:
            n = min(len(s["t"]) for s in run.snaps)
        if n < 2:
            raise ConfigError(f"{run.dir} has {n} snapshot{'s' if n != 1 else ''}: a movie needs at "
                              "least two (run it with a smaller --set save_every)")
    plt.rcParams["figure.dpi"] = dpi
    if what == "depth":
        fig, update, idx = _depth(run, None, plt)
        idx = frame_indices(len(idx), frames)
        return animation.FuncAnimation(fig, lambda i: update(idx[i]), frames=len(idx),
                                       interval=1000 / fps, blit=False)
    idx = frame_indices(len(run.phase["t"]) if what != "torus" else n, frames)
    fig, update = _BUILDERS[what](run, idx, plt)
    return animation.FuncAnimation(fig, update, frames=len(idx), interval=1000 / fps, blit=False)


def _writer(suffix: str, fps: float):
    from matplotlib import animation

    if suffix == ".gif":
        return animation.PillowWriter(fps=fps)
    if suffix == ".mp4":
        import matplotlib

        if not animation.writers.is_available("ffmpeg"):
            try:
                import imageio_ffmpeg

                matplotlib.rcParams["animation.ffmpeg_path"] = imageio_ffmpeg.get_ffmpeg_exe()
            except ImportError:
                raise ConfigError("no MP4 writer: install the movies extra (pip install "
                                  "'meanfield[movies]', which brings imageio-ffmpeg) or ffmpeg, "
                                  "or write a .gif") from None
        return animation.FFMpegWriter(fps=fps)
    raise ConfigError(f"unknown movie format {suffix!r}; choose one of {', '.join(FORMATS)}")


def write_movie(run_dir, out=None, *, what: str | None = None, fps: float = 10,
                frames: int | None = None, dpi: float = 100, progress: bool = True) -> Path:
    """Render :func:`animate` to ``out`` (default ``DIR/figures/<view>.gif``; ``.gif`` by
    Pillow, ``.mp4`` by ffmpeg) through a temporary file, so that nothing is left behind when
    it fails; returns the path.  Everything is checked before rendering (ConfigError)."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    what = what or views(run.experiment)[0]
    out = Path(out) if out is not None else run_dir / io.FIGURES / f"{what}.gif"
    if not fps > 0 or not math.isfinite(fps):
        raise ConfigError(f"--fps must be a finite number > 0, got {fps}")
    if not dpi > 0 or not math.isfinite(dpi):
        raise ConfigError(f"--dpi must be a finite number > 0, got {dpi}")
    suffix = out.suffix.lower()
    writer = _writer(suffix, fps)
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out {out} is a directory")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is not a directory")
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: {parent} is not writable")
    anim = animate(run_dir, what, frames=frames, fps=fps, dpi=dpi, run=run)
    tmp = parent / f".{out.name}.tmp{suffix}"
    from tqdm.auto import tqdm

    total = anim._save_count if getattr(anim, "_save_count", None) else None
    bar = tqdm(total=total, desc=f"animate {what}", unit="frame", disable=None if progress else True,
               leave=False)
    try:
        anim.save(str(tmp), writer=writer, dpi=dpi,
                  progress_callback=lambda i, n: bar.update(1))
        os.replace(tmp, out)
    finally:
        bar.close()
        tmp.unlink(missing_ok=True)
        import matplotlib.pyplot as plt

        plt.close(anim._fig)
    return out


def describe_views() -> str:
    """One line: each experiment with its views ("teacher-student: cloud, plane; …")."""
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in experiment_views().items())


__all__ = ["FORMATS", "Run", "animate", "describe_views", "experiment_views", "frame_indices", "views",
           "write_movie"]
