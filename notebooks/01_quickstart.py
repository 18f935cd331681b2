# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 01 — Quickstart: a two-layer network as a measure
#
# A two-layer network in mean-field scaling is a probability measure on the units'
# parameters, f(x; ρ) = ∫ φ(x; θ) ρ(dθ), here with φ(x; θ) = a relu(⟨w, x⟩). Training is the
# Wasserstein gradient flow of the risk R(ρ) = E[(y − f(x; ρ))²] (no ½, as in
# Mei–Montanari–Nguyen), simulated by N particles:
# dθ_i/dt = −2 ∇Ψ(θ_i; ρ_N), Ψ = V + ∫U dρ. For Gaussian inputs V and U are closed form, so the
# risk below is exact (no Monte Carlo).
#
# `MEANFIELD_SMALL=1` shrinks the run (the test suite executes this file that way).

# %%
import math
import os
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # a script: draw off-screen (Jupyter shows figures inline)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import meanfield as mf  # noqa: E402
from meanfield import diagnostics  # noqa: E402

SMALL = os.environ.get("MEANFIELD_SMALL") == "1"
# outputs beside this notebook, whatever the working directory (Jupyter runs a notebook in
# its own folder; a script knows its __file__): notebooks/_out/, ignored by git
HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
OUT = Path(os.environ.get("MEANFIELD_NOTEBOOK_OUT", HERE / "_out")) / "01_quickstart"
OUT.mkdir(parents=True, exist_ok=True)
N, STEPS, DT = (300, 150, 0.2) if SMALL else (1000, 500, 0.2)

# %% [markdown]
# ## The task: a teacher network of 4 ReLU units in d = 10, Gaussian inputs

# %%
g = torch.Generator().manual_seed(0)
unit = mf.Unit(d=10, activation="relu", output_weight=True)         # θ = [a, w_0 … w_9]
task = mf.TeacherStudent.random(unit, m0=4, generator=g)            # y = f*(x), x ~ N(0, I)
rho0 = mf.ParticleMeasure.gaussian(N, unit.D, generator=g, std=[1.0] + [1 / math.sqrt(10)] * 10)
print(unit.param_names)

# %% [markdown]
# ## Population gradient flow, with the exact risk along the way

# %%
flow = mf.gradient_flow(task, dt=DT, backend="auto")
state = flow.init(rho0, generator=g)
state, rec = flow.run(state, STEPS, record_every=1)     # STEPS steps, t and R recorded at each
ts, risks = rec.t[:-1].tolist(), rec.risk[:-1, 0].tolist()     # R at θ_k, k < STEPS, exact
value, se = diagnostics.risk(task, state.theta)     # R per replica [B] and its s.e. (None: exact)
final = float(value[0])
print(f"t = {state.t:g}: R = {risks[0]:.4f} -> {final:.2e}")

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.semilogy(ts, risks)
ax.set_xlabel("t (MMN time, t = k·dt)")
ax.set_ylabel("R(ρ_N)")
fig.tight_layout()
fig.savefig(OUT / "risk.png")

# %% [markdown]
# ## The particle cloud: units line up with the teacher's directions
# Plot (|w_i|, a_i) at the end, and the teacher's units as stars.

# %%
th = state.theta                                    # [N, D]: the state keeps rho0's layout
r, a = th[:, 1:].norm(dim=-1), th[:, 0]
cos = (th[:, 1:] / r[:, None]) @ task.teacher_theta[:, 1:].T.to(th.dtype)        # [N, m0]
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(r, a, s=4, c=cos.max(-1).values, cmap="viridis")
ax.scatter(task.teacher_theta[:, 1:].norm(dim=-1), task.teacher_theta[:, 0], marker="*", s=120,
           color="C3")
ax.set_xlabel("|w|")
ax.set_ylabel("a")
fig.tight_layout()
fig.savefig(OUT / "particles.png")

# %% [markdown]
# What we check (the test suite runs this notebook): the risk fell by two orders of magnitude,
# it never increased (a gradient flow with a small step), and the units that carry most of the
# output (the top 10 % in a·|w|) point along teacher units far more than a typical unit does
# (measured: mean best cosine 0.78 vs 0.37 in the small run, 0.86 vs 0.39 in the full one).

# %%
assert final < 0.01 * risks[0], (risks[0], final)
assert all(b <= a + 1e-7 for a, b in zip(risks, risks[1:]))
heavy = (a * r) > (a * r).quantile(0.9)
best = cos.max(-1).values
assert best[heavy].mean() > 0.7 and best[heavy].mean() > 1.5 * best.mean()


# %% [markdown]
# ## The same run as a run directory
# `meanfield run teacher-student` (here `meanfield.runner.run`) does the above in a run
# directory: config.json, metrics.csv, checkpoints, figures, and 51 snapshots of the particles.

# %%
import shutil  # noqa: E402

from meanfield import runner  # noqa: E402

run_dir = OUT / "run"
shutil.rmtree(run_dir, ignore_errors=True)
cfg = runner.build_config("teacher-student", sets=[f"N={N}", f"steps={STEPS}", f"dt={DT}",
                                                   f"save_every={max(1, STEPS // 50)}"])
res = runner.run("teacher-student", cfg, run_dir, progress=False)
print(f"final risk {res.rows[-1]['risk']:.3e} -> {run_dir}")


# %% [markdown]
# ## The flow as a movie
# The particles (|w_i|, a_i) move onto the teacher's units (stars) while the risk falls. `meanfield animate DIR` writes a run's movie (a GIF; `--what` picks the view);
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
