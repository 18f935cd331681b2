"""Figures from run directories (matplotlib only; reads results, never simulates).

The helpers every figure module uses (``meanfield.figures``): :func:`pyplot` (matplotlib
without windows) and :func:`save_figure` (atomic writes); and the figures of a particle run
that declares none of its own (:func:`plot_run`: risk, particles, diagnostics, histograms).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import io


def pyplot():
    """``matplotlib.pyplot``, imported on first use with the non-interactive Agg backend
    unless a non-interactive one (or Jupyter's inline backend) is already set: figures are
    drawn into files (or a notebook), never into windows."""
    import matplotlib

    # never open windows; Jupyter's inline backend is kept (it only draws into the notebook)
    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "cairo",
                                                 "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover
            pass
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary ``.NAME.tmp`` in the same directory,
    then rename; the format from ``path``'s suffix) and close it.  A writer killed mid-way
    leaves only the temporary, which ``io.remove_stale_temporaries`` clears."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
        tmp.replace(path)
    except OSError as e:                  # a full disk: name the figure
        raise io.with_filename(e, path) from None
    finally:
        pyplot().close(fig)
        tmp.unlink(missing_ok=True)
    return path


def value_scale(ax, values, axis: str = "y") -> str:
    """Set ``ax``'s value axis (``axis`` "y" or "x") for ``values``: "log" when every finite
    value is > 0; else "symlog" when the nonzero |values| span more than two decades, linear
    up to the power of ten below their median (at least 10⁻⁴ of the largest), so negative
    values (a free energy, an entropy) stay on the plot and values fluctuating around 0 stay
    in its linear part; else "linear".  Returns the scale set."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    if v.size and (v > 0).all():
        setter("log")
        return "log"
    nz = np.abs(v[v != 0])
    if not nz.size or nz.max() < 100 * nz.min():
        setter("linear")
        return "linear"
    setter("symlog", linthresh=float(10 ** np.floor(np.log10(max(np.median(nz), nz.max() * 1e-4)))))
    return "symlog"


def plot_risk(run_dir, ax=None):
    """Risk R(ρ_t) against t (log scale), with ±2 s.e. when Monte Carlo."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    if not m:
        from .errors import ConfigError

        raise ConfigError(f"{run_dir / io.METRICS} has no rows")
    plt = pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    reps = sorted(k for k in m if k.startswith("risk_r"))
    for k in reps:
        ax.plot(m["t"], m[k], lw=0.6, alpha=0.4, color="C0")
    ax.plot(m["t"], m["risk"], color="C0", lw=1.6, label="risk" + (" (mean of replicas)" if reps else ""))
    if "risk_se" in m:
        ax.fill_between(m["t"], m["risk"] - 2 * m["risk_se"], m["risk"] + 2 * m["risk_se"],
                        color="C0", alpha=0.2, lw=0)
    if np.all(m["risk"] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("t (MMN time, t = k·dt)")
    ax.set_ylabel("R(ρ_N)")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    if own:
        fig.tight_layout()
        return fig
    return ax


def plot_particles(run_dir):
    """(|w_i|, a_i) at the first and last snapshot, with the teacher units when present."""
    run_dir = Path(run_dir)
    with np.load(run_dir / io.PARTICLES) as z:
        names = list(z["param_names"])
        theta = z["theta"]
        t = z["t"]
        teacher = z["teacher_theta"] if "teacher_theta" in z else None
    if theta.ndim == 4:        # replicas: show the first
        theta = theta[:, 0]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    w_idx = [i for i, n in enumerate(names) if n.startswith("w")]
    a_idx = names.index("a") if "a" in names else None

    def coords(th):
        r = np.linalg.norm(th[..., w_idx], axis=-1)
        return r, (th[..., a_idx] if a_idx is not None else np.ones_like(r))

    for k, (lab, c) in enumerate(((f"t = {t[0]:.3g}", "0.6"), (f"t = {t[-1]:.3g}", "C0"))):
        r, a = coords(theta[0 if k == 0 else -1])
        ax.scatter(r, a, s=4, color=c, alpha=0.6, label=lab, lw=0)
    if teacher is not None:
        r, a = coords(teacher)
        ax.scatter(r, a, s=60, marker="*", color="C3", label="teacher")
    ax.set_xlabel("|w|")
    ax.set_ylabel("a" if a_idx is not None else "a ≡ 1")
    ax.legend(frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_diagnostics(run_dir):
    """‖v‖²_{L²(ρ)} and the empirical PL ratio ‖v‖²/(R − R_inf) against t."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=120)
    for ax, key, label in ((axes[0], "velocity_sq", "‖v‖²  (Σ m_i |dθ_i/dt|²)"),
                           (axes[1], "pl_ratio", "PL ratio ‖v‖² / (R − R_inf)")):
        if key in m and np.isfinite(m[key]).any():
            ax.plot(m["t"], m[key], color="C1")
            if np.all(m[key][np.isfinite(m[key])] > 0):
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("t")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


FREE_ENERGY_COLUMNS = (("free_energy", "free energy F = ½R + (λ/2)∫|θ|² dρ − β⁻¹ Ĥ"),
                       ("entropy", "entropy Ĥ (k-NN estimate)"))


def plot_free_energy(run_dir):
    """The free energy and the entropy a noisy run records (metrics.csv's ``free_energy``
    and ``entropy``: the Langevin dynamics' Lyapunov functional and its entropy term)
    against t, on signed axes: the free energy's logarithmic while it stays > 0, else
    symmetric-log (``value_scale``), the entropy's linear (both can be negative)."""
    run_dir = Path(run_dir)
    m = io.read_metrics(run_dir / io.METRICS)
    cols = [(k, label) for k, label in FREE_ENERGY_COLUMNS if k in m]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), dpi=120, squeeze=False)
    for ax, (key, label) in zip(axes[0], cols):
        ok = np.isfinite(m[key])
        ax.plot(m["t"][ok], m[key][ok], color="C2")
        if key == "free_energy":            # it decays over decades, towards a value of any sign
            value_scale(ax, m[key][ok])
        if (m[key][ok] <= 0).any():
            ax.axhline(0.0, color="0.6", lw=0.6)
        ax.set_xlabel("t (MMN time, t = k·dt)")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _coordinate(theta, names, coord):
    """Values of a named coordinate of θ [..., D]: a parameter name, or "|w|"."""
    if coord == "|w|":
        idx = [i for i, n in enumerate(names) if n.startswith("w")]
        return np.linalg.norm(theta[..., idx], axis=-1)
    if coord not in names:
        from .errors import ConfigError

        raise ConfigError(f"unknown coordinate {coord!r}; choose '|w|' or one of {names}")
    return theta[..., names.index(coord)]


def plot_histograms(run_dir, coords=None, max_times: int = 4):
    """Histograms of chosen coordinates (default |w| and a) at up to ``max_times``
    snapshot times spread over the run."""
    run_dir = Path(run_dir)
    with np.load(run_dir / io.PARTICLES) as z:
        names = [str(n) for n in z["param_names"]]
        theta, t = z["theta"], z["t"]
    if theta.ndim == 4:
        theta = theta[:, 0]
    if coords is None:
        coords = (["|w|"] if any(n.startswith("w") for n in names) else [names[0]]) + \
                 (["a"] if "a" in names else [])
    picks = np.unique(np.linspace(0, len(t) - 1, min(max_times, len(t))).round().astype(int))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(coords), figsize=(4 * len(coords), 3.2), dpi=120, squeeze=False)
    for ax, coord in zip(axes[0], coords):
        vals = [_coordinate(theta[k], names, coord) for k in picks]
        lo, hi = min(v.min() for v in vals), max(v.max() for v in vals)
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 40)
        for j, (k, v) in enumerate(zip(picks, vals)):
            ax.hist(v, bins=bins, density=True, histtype="step", lw=1.3,
                    color=plt.cm.viridis(j / max(1, len(picks) - 1)), label=f"t = {t[k]:.3g}")
        ax.set_xlabel(coord)
        ax.set_ylabel("density")
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_run(run_dir, coords=None) -> list[Path]:
    """Redraw every figure of a run into DIR/figures/ from its files alone (risk, velocity
    norm and PL ratio, free energy and entropy when the run records them — noisy runs —,
    particle cloud, histograms of ``coords``); returns the paths."""
    run_dir = Path(run_dir)
    figdir = run_dir / io.FIGURES
    figdir.mkdir(exist_ok=True)
    written = []
    has_particles = (run_dir / io.PARTICLES).exists()
    if coords is not None and has_particles:      # fail before drawing anything
        with np.load(run_dir / io.PARTICLES) as z:
            names = [str(n) for n in z["param_names"]]
        for c in coords:
            _coordinate(np.zeros(len(names)), names, c)
    figures = [("risk.png", plot_risk), ("diagnostics.png", plot_diagnostics)]
    header = []
    if (run_dir / io.METRICS).is_file():
        with open(run_dir / io.METRICS, errors="replace") as f:
            header = f.readline().strip().split(",")
    if any(k in header for k, _ in FREE_ENERGY_COLUMNS):
        figures.append(("free_energy.png", plot_free_energy))
    if has_particles:
        figures += [("particles.png", plot_particles),
                    ("histograms.png", lambda d: plot_histograms(d, coords))]
    for name, fn in figures:
        written.append(save_figure(fn(run_dir), figdir / name))
    return written
