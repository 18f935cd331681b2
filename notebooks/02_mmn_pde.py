# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 02 — Mei–Montanari–Nguyen: SGD against the distributional dynamics
#
# MMN's isotropic Gaussians (PNAS 2018): y = ±1, x | y ~ N(0, (1 ± Δ)² I_d), units
# φ(x; w) = σ(⟨w, x⟩) with a piecewise-linear σ. The law of the units stays rotation
# invariant, so the PDE limit reduces to a 1-D equation for the law of r = |w|:
#
#   ∂_t P = ∂_r (P · 2ξ ∂_r ψ(r; P)),   ψ(r; P) = v(r) + ∫ u(r, r') P(r') dr',
#
# with v, u the angle-averaged potentials (exact, through a Hermite/Mehler expansion).
# We solve it with `meanfield.pde.RadialDD` and compare with online SGD run by
# `meanfield run mmn-isotropic` — the same experiment the CLI runs, here in a small mode.

# %%
import math
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw off-screen (Jupyter shows figures inline)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from meanfield import io  # noqa: E402
from meanfield import runner  # noqa: E402
from meanfield.experiments import get_experiment  # noqa: E402
from meanfield.models.activations import get_activation  # noqa: E402
from meanfield.models.radial import IsotropicRadialPotentials  # noqa: E402
from meanfield.pde import RadialDD, RadialGrid, chi_law  # noqa: E402

SMALL = os.environ.get("MEANFIELD_SMALL") == "1"
# outputs beside this notebook, whatever the working directory (Jupyter runs a notebook in
# its own folder; a script knows its __file__): notebooks/_out/, ignored by git
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MEANFIELD_NOTEBOOK_OUT", HERE / "_out")) / "02_mmn_pde"
OUT.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## The PDE alone: MMN's Fig. 1 setting (Δ = 0.8, d = 40, κ = 0.8)

# %%
act = get_activation("piecewise", t1=0.5, t2=1.5, s1=-2.5, s2=7.5)
pot = IsotropicRadialPotentials(act, delta=0.8, d=40)
grid = RadialGrid(r_max=8.0, cells=1200 if SMALL else 2400)   # 400 cells: R off by 0.01
dd = RadialDD(pot, grid, d=40)
P0 = grid.cell_averages(chi_law(40, 0.8 / math.sqrt(40)))        # r = |w|, w ~ N(0, 0.8²/d I)
times = np.linspace(0, 8, 9)
sol = dd.solve(P0, times)
for t, R, r in zip(times, sol.risk, sol.mean_r()):
    print(f"t = {t:4.1f}   R = {R:.4f}   E r = {r:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for k in (0, 2, 4, 8):
    ax.plot(grid.centers, sol.density[k], label=f"t = {times[k]:g}")
ax.set_xlabel("r = |w|")
ax.set_ylabel("density of r")
ax.set_xlim(0, 6)
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "pde_densities.png")

# %% [markdown]
# ## SGD against the PDE (the `mmn-isotropic` experiment in a small mode)
# The full setting (N = 800, ε = 10⁻⁶, T = 20) is `meanfield run mmn-isotropic --out DIR`.

# %%
exp = get_experiment("mmn-isotropic")
sets = ["scale=small"] + (["N=200", "steps=160000", "save_every=3200", "checkpoint_every=40000",
                           "pde_refine=false"] if SMALL else [])
cfg = exp.Config.build(None, sets)
run_dir = OUT / "run"
if run_dir.exists():
    import shutil

    shutil.rmtree(run_dir)
runner.run(exp, cfg, run_dir, progress=False)
m = io.read_metrics(run_dir / io.METRICS)
print(f"N = {cfg.N}, ε = {cfg.dt:g}, T = {m['t'][-1]:g}")
print("max |R_SGD − R_PDE| / (0.05 R_PDE + 25/N) =",
      round(float((np.abs(m["risk"] - m["risk_pde"]) / m["gap_bound"]).max()), 3))
print("max W1(|w|, PDE) / E_PDE r =", round(float((m["w1"] / m["mean_r_pde"]).max()), 4))

# %% [markdown]
# The run directory holds the figures (risk.png: SGD symbols and the PDE line; histograms.png:
# |w_i| against the PDE density at 4 times). Checks: the acceptance bounds hold at every
# recorded time, and the PDE solved here agrees with the experiment's own PDE at t = 4.

# %%
gap = np.abs(m["risk"] - m["risk_pde"])
assert (gap <= m["gap_bound"] + 3 * m["risk_se"]).all()
assert (m["w1"] <= 0.05 * m["mean_r_pde"]).all()
i4 = int(np.argmin(np.abs(m["t"] - 4.0)))
assert abs(m["risk_pde"][i4] - sol.risk[4]) < 0.01, (m["risk_pde"][i4], sol.risk[4])
assert sol.risk[-1] < 0.5 * sol.risk[0]
assert (run_dir / "figures" / "histograms.png").exists()

# %% [markdown]
# ## The flow as a movie
# The histogram of |w_i| slides along the PDE's density of |w|. `meanfield animate DIR` writes a run's movie (a GIF; `--what` picks the view);
# `meanfield.movies.animate(DIR)` returns it as a matplotlib animation; under Jupyter the
# GIF it saved plays inline (`anim.to_jshtml()` would give a player with buttons instead).

# %%
from meanfield import movies  # noqa: E402

anim = movies.animate(run_dir, frames=12 if SMALL else None, dpi=60)
anim.save(OUT / "movie.gif", writer="pillow", fps=8)
plt.close("all")                                      # the animation's figure: shown as the movie only
if "ipykernel" in sys.modules:                        # under Jupyter: play the GIF inline
    from IPython.display import Image, display

    display(Image(filename=str(OUT / "movie.gif")))
assert (OUT / "movie.gif").stat().st_size > 5000
