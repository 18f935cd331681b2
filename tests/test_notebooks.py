"""Every notebook (jupytext percent script in notebooks/) runs top to bottom in its small mode
(MEANFIELD_SMALL=1) in a fresh process, asserts on what it computed (the asserts live in the
notebook), and writes its figures.

The notebooks run as notebooks: through a Jupyter kernel (``scripts/notebooks.py``, the
``notebook_runs`` fixture of conftest.py, shared with the documentation build), where their
figures must show inline; one also runs as a plain script, from another working directory,
where its figures must land beside the notebook (notebooks/_out/), never in the working
directory. Without the notebooks extra every notebook runs as a script and the inline checks
are skipped. Two notebooks run at a time (one torch thread each: the CI machine has 2 cores),
then one test per notebook checks its exit status, printed numbers and figures.

The ``test_docs_site_*`` tests build the documentation site with
``scripts/build_docs.py`` in strict mode (Sphinx ``-W``) from those same kernel executions (no
second run; they live in this file so that a parallel test run, one file per pytest-xdist
worker, executes the notebooks once), then check that every public object has an anchor,
every notebook page a rendered figure and every subcommand a section.  They skip without the
docs extra (``pip install -e '.[docs]'``; ``make test`` installs it)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
# figures each notebook must produce (under $MEANFIELD_NOTEBOOK_OUT/<notebook name>/)
FIGURES = {
    "01_quickstart": ["risk.png", "particles.png", "movie.gif"],
    "02_mmn_pde": ["pde_densities.png", "run/figures/risk.png", "run/figures/histograms.png", "movie.gif"],
    "03_n_dependence": ["n_dependence.png", "run/figures/n_scaling.png"],
    "04_chizat_bach": ["relu2d_trajectories.png", "relu2d_risk.png", "threshold.png", "movie.gif"],
    "05_langevin": ["pde_gibbs.png", "pde_free_energy.png", "torus_free_energy.png",
                    "torus_annealing.png", "run/figures/free_energy.png", "run/figures/annealing.png",
                    "run/figures/particles.png"],
    "06_resnet_cot": ["training.png", "limits.png", "run/figures/limits.png", "movie.gif"],
    "07_rkhs_resnet": ["rkhs_kernel.png", "rkhs_training.png", "obstruction_matrix.png",
                       "obstruction_resnet.png", "rkhs/figures/training.png",
                       "linear-obstruction-d3/figures/obstruction.png"],
    "08_your_network": ["units.png", "training.png", "n_sweep.png"],
    "09_lazy_vs_meanfield": ["scales.png", "certificate.png", "run/figures/paths.png",
                             "run/figures/alpha.png", "run/figures/crossover.png",
                             "run/figures/linearization.png"],
}
# the key numbers each notebook prints, parsed from its stdout: (regex with one number group,
# low, high) — what the notebook claims, in ranges its small mode resolves (measured values in
# the comments); a notebook whose subject were replaced by a constant would print other numbers
NUM = r"([-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
KEY_NUMBERS = {
    "01_quickstart": [(rf"final risk {NUM}", 1e-4, 5e-3)],                                # 1.2e-3
    "02_mmn_pde": [(rf"t =  8\.0   R = {NUM}", 0.275, 0.295),                             # 0.2853
                   (rf"t =  0\.0   R = {NUM}", 1.70, 1.71),                               # 1.7045
                   (rf"/ \(0\.05 R_PDE \+ 25/N\) = {NUM}", 0.0, 1.0),                   # 0.223
                   (rf"max W1\(\|w\|, PDE\) / E_PDE r = {NUM}", 0.0, 0.05)],           # 0.014
    "03_n_dependence": [(rf"i\.i\.d\. slope {NUM}", -1.05, -0.95),                       # −1.003
                        (rf"N =    32: mean R = \S+ ± \S+,  N·R/K\* = {NUM}", 0.9, 1.1),  # 1.000
                        (rf"GD slope {NUM}", -1.5, -1.0),                                 # −1.370
                        (rf"gap / i\.i\.d\. excess at N_max = {NUM}", 0.0, 0.01)],       # 1.2e-3
    "04_chizat_bach": [(rf"T = 600: m\* = {NUM}", 7, 7), (rf"T = 1200: m\* = {NUM}", 5, 5),  # m0 = 5
                       (rf"^m = 20: final risks \[{NUM}", 1e-5, 1e-4),                  # 5.5e-5
                       (rf"from t = 9: max \|balance − flow value\| / max \|balance\(t\)\| = {NUM}",
                        0.0, 5e-3)],                                                    # 1.1e-3
    "07_rkhs_resnet": [(rf"ν = 0\.5: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 0.99, 1.01),
                       (rf"ν = 1: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"ν = 1\.5: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"ν = inf: exponent {NUM} on δ ∈ \[1e-4, 1e-3\]", 1.99, 2.01),
                       (rf"linear, lifted D = 6   loss \S+ -> {NUM}", 0.0, 1e-4),           # 8.5e-8
                       (rf"linear, D = 3          loss \S+ -> {NUM}", 0.5, 2.0)],          # 0.95: stuck
    "05_langevin": [(rf"β = 20: max_t ΔF = {NUM}", -1.0, 1e-12),                      # F decreases
                    (rf"β = 20: max_t ΔF = \S+ \(≤ 0 up to round-off\), ‖P_T − P\*‖₁ = {NUM}", 0.0, 1e-6),
                    (rf"agrees with gibbs_fixed_point to {NUM}", 0.0, 1e-10),
                    (rf"annealed below noiseless in {NUM}% of seeds", 75, 100),             # 100
                    (rf"annealed below noiseless in \S+ of seeds; ratio of means {NUM}", 0.0, 0.5)],  # 0.17
    "06_resnet_cot": [(rf"max \|module\(X\) − model\(X\)\| = {NUM}", 0.0, 1e-12),
                      (rf"max \|v \+ L·M ∇_θ loss\| / max \|v\| = {NUM}", 0.0, 1e-12),
                      (rf"max \|θ_flow − θ_SGD\| = {NUM}", 0.0, 1e-10),
                      (rf"discretisation gap \S+ -> \S+ \(ratio {NUM}\)", 3.0, 5.0),   # 3.80
                      (rf"against 1/L − 1/L_ref {NUM}", 0.8, 1.5),                        # 1.18
                      (rf"against 1/L − 1/L_ref \S+, against 1/M \+ 1/M_ref {NUM}", 0.2, 0.6)],  # 0.38
    "08_your_network": [(rf"\|f\(x; ρ_N\) − net\(x\)\| = {NUM}", 0.0, 1e-12),
                        (rf"lr = N·dt: max \|Δθ\| = {NUM}", 0.0, 1e-12),
                        (rf"^\s+100\s+{NUM}", 0.0, 0.05)],                                # 0.0177
    "09_lazy_vs_meanfield": [(rf"against N: slope {NUM}", -0.6, -0.4),                    # −0.507
                             (rf"\(tanh, centred\): {NUM}", -1.2, -0.8),                    # −0.99
                             (rf"\(tanh, symmetric\): {NUM}", -2.3, -1.7),                  # −1.99
                             (rf"min q_t = {NUM}", 1e-3, 1.0),                                # 3.0e-3
                             (rf"N =   32: displacement slope in α {NUM}", -1.1, -0.9)],     # −1.000
}
BUDGET_S = 240          # per notebook, in small mode (conftest.NOTEBOOK_BUDGET_S)


def test_every_notebook_has_a_figure_list():
    assert {p.stem for p in NOTEBOOKS} <= set(FIGURES), "add the new notebook to FIGURES"
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_small_mode(path, notebook_runs):
    run = notebook_runs[path.stem]
    assert run.returncode is not None, f"{path.name}: over {BUDGET_S} s"
    assert run.returncode == 0, run.stderr[-3000:]
    for fig in FIGURES[path.stem]:
        f = run.out / path.stem / fig
        assert f.exists() and f.stat().st_size > 5_000, f


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_shows_its_figures_inline(path, notebook_runs):
    """Under Jupyter every figure the notebook draws is an output of its cell (inline backend;
    the movies as animations): at least as many images as figures of its own it saves."""
    run = notebook_runs[path.stem]
    if run.via != "kernel":
        pytest.skip("the notebooks extra (jupytext, nbclient, ipykernel) is not installed")
    assert run.returncode == 0, run.stderr[-3000:]
    own = [f for f in FIGURES[path.stem] if "/" not in f]
    assert run.images() >= len(own), (path.stem, run.images(), own)


def test_notebook_runs_as_a_script_from_anywhere(tmp_path):
    """As a script (Agg backend, no kernel) from another working directory and without
    MEANFIELD_NOTEBOOK_OUT, the quickstart prints the same numbers and saves its figures in
    notebooks/_out/01_quickstart/, beside the notebook; the working directory stays empty."""
    import time

    path = ROOT / "notebooks" / "01_quickstart.py"
    out = ROOT / "notebooks" / "_out" / "01_quickstart"
    env = {k: v for k, v in os.environ.items() if k not in ("MEANFIELD_NOTEBOOK_OUT", "MPLBACKEND")}
    env.update(MEANFIELD_SMALL="1", OMP_NUM_THREADS="1")
    t0 = time.time() - 1
    res = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=BUDGET_S)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
    for fig in FIGURES["01_quickstart"]:
        assert (out / fig).stat().st_mtime >= t0, out / fig
    assert re.search(rf"final risk {NUM}", res.stdout), res.stdout[-2000:]


@pytest.mark.parametrize("stem", sorted(KEY_NUMBERS))
def test_notebook_prints_its_key_numbers(stem, notebook_runs):
    """The numbers each notebook prints lie where its claims put them (KEY_NUMBERS)."""
    run = notebook_runs[stem]
    assert run.returncode == 0, run.stderr[-3000:]
    for pattern, lo, hi in KEY_NUMBERS[stem]:
        found = re.search(pattern, run.stdout, re.MULTILINE)
        assert found, f"{stem}: no line matches {pattern!r}"
        assert lo <= float(found.group(1)) <= hi, (stem, pattern, found.group(0))


# --------------------------------------------------------------------------- the documentation site

@pytest.fixture(scope="module")
def docs_site(notebook_runs, tmp_path_factory):
    """The site built by scripts/build_docs.py, strict (-W), in a fresh build folder, from the
    notebooks the session already executed through a kernel (no second execution)."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("furo")
    runs = list(notebook_runs.values())
    if not runs or any(r.via != "kernel" for r in runs):
        pytest.skip("the notebooks extra is not installed: no executed notebooks to render")
    for stem, run in notebook_runs.items():
        assert run.returncode == 0, f"notebook {stem} failed:\n{run.stderr[-3000:]}"
    build = tmp_path_factory.mktemp("docs")
    (folder,) = {r.ipynb.parent for r in runs}
    res = subprocess.run([sys.executable, "scripts/build_docs.py", "--notebooks", str(folder),
                          "--build-dir", str(build), "--jobs", "2"],
                         cwd=ROOT, capture_output=True,
                         text=True, timeout=400)
    assert res.returncode == 0, (res.stdout + res.stderr)[-6000:]
    return build / "html"


def test_docs_site_builds_without_warnings(docs_site):
    """Broken links, docstrings that do not parse, a public object without a docstring or a
    notebook that raised each fail the strict build (the fixture); here, the navigation."""
    index = (docs_site / "index.html").read_text()
    for page in ("guide/index.html", "notebooks/index.html", "reproductions.html",
                 "api/index.html", "cli.html", "benchmarks.html"):
        assert (docs_site / page).exists(), page
        assert f'href="{page}"' in index, f"{page} not in the landing page's navigation"
    assert "Two commands" in index and "gallery/" in index.replace("_images/", "gallery/")


def test_docs_site_has_an_anchor_for_every_public_object(docs_site, public_api):
    """Every public function, class, method and property (conftest's ``public_api``, the
    objects the docstring test walks) has its anchor on its module's API page."""
    missing = []
    for module, _, members in public_api:
        if members:
            page = (docs_site / "api" / f"{module}.html").read_text()
            missing += [f"{module}.{qual}" for qual, _ in members if f'id="{module}.{qual}"' not in page]
    assert not missing, f"{len(missing)} public objects without an anchor:\n" + "\n".join(missing)


def test_docs_site_notebook_pages_show_figures(docs_site):
    """Every notebook page holds its outputs: at least one rendered figure."""
    stems = [p.stem for p in NOTEBOOKS]
    assert len(stems) >= 8
    for stem in stems:
        html = (docs_site / "notebooks" / f"{stem}.html").read_text()
        assert re.search(r'<img [^>]*src="(\.\./_images/|data:image/)', html), stem


def test_docs_site_cli_reference_comes_from_the_parser(docs_site, cli_subparsers):
    html = (docs_site / "cli.html").read_text()
    for sub in cli_subparsers.choices:
        assert f'id="cli-{sub}"' in html, sub


def test_docs_site_renders_maths_from_its_own_copy_of_mathjax(docs_site):
    """Every page loads MathJax from the site itself (nothing from another host at read time);
    the API pages' TeX-style formulas are math spans, with no raw ``_{`` left in their text."""
    assert (docs_site / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000
    pages = sorted(docs_site.rglob("*.html"))
    assert len(pages) > 50
    for page in pages:
        html = page.read_text()
        assert not re.search(r'<script[^>]+src="https?://', html), page.name
    maths, raw = 0, []
    for page in sorted((docs_site / "api").glob("*.html")):
        html = page.read_text()
        maths += len(re.findall(r'class="math[ "]', html))
        text = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', "", html, flags=re.S)
        text = re.sub(r"<(code|pre)[^>]*>.*?</\1>", "", text, flags=re.S)
        raw += [page.name for _ in re.findall(r"[_^]\{", re.sub(r"<[^>]+>", "", text))]
    assert maths > 50 and not raw, (maths, sorted(set(raw))[:10])
