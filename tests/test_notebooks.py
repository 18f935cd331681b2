"""Every notebook (jupytext percent script in notebooks/) runs top to bottom in its small mode
(MEANFIELD_SMALL=1) in a fresh process, asserts on what it computed (the asserts live in the
notebook), and writes its figures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# figures each notebook must produce (under $MEANFIELD_NOTEBOOK_OUT/<notebook name>/)
FIGURES = {
    "01_quickstart": ["risk.png", "particles.png"],
    "02_mmn_pde": ["pde_densities.png", "run/figures/risk.png", "run/figures/histograms.png"],
    "03_n_dependence": ["n_dependence.png", "run/figures/n_scaling.png"],
    "04_chizat_bach": ["relu2d_trajectories.png", "relu2d_risk.png", "threshold.png"],
    "05_langevin": ["pde_gibbs.png", "pde_free_energy.png", "torus_free_energy.png",
                    "torus_annealing.png", "run/figures/free_energy.png", "run/figures/annealing.png",
                    "run/figures/particles.png"],
    "06_resnet_cot": ["training.png", "limits.png", "run/figures/limits.png"],
    "07_rkhs_resnet": ["rkhs_kernel.png", "rkhs_training.png", "obstruction_matrix.png",
                       "obstruction_resnet.png", "rkhs/figures/training.png",
                       "linear-obstruction-d3/figures/obstruction.png"],
}
BUDGET_S = 240          # per notebook, in small mode


def test_every_notebook_has_a_figure_list():
    assert {p.stem for p in NOTEBOOKS} <= set(FIGURES), "add the new notebook to FIGURES"
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, tmp_path):
    env = {**os.environ, "MEANFIELD_SMALL": "1", "MEANFIELD_NOTEBOOK_OUT": str(tmp_path),
           "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=BUDGET_S)
    assert res.returncode == 0, res.stderr[-3000:]
    for fig in FIGURES[path.stem]:
        f = tmp_path / path.stem / fig
        assert f.exists() and f.stat().st_size > 5_000, f
