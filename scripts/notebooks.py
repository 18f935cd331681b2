"""Execute the notebooks (jupytext percent scripts ``notebooks/NN_*.py``) through a Jupyter kernel.

    python scripts/notebooks.py [--small] [--out DIR] [--jobs J] [NAME ...]     (make notebooks)

Each notebook runs in a fresh ``python3`` kernel whose working directory is ``notebooks/`` (as
Jupyter runs a notebook in its own folder), with matplotlib's inline backend, so figures show
as cell outputs; the executed notebook, outputs included, is written to ``DIR/<stem>.ipynb``
(default ``notebooks/_out/``, ignored by git; open it in Jupyter or VS Code). The figures the
notebook saves go to ``$MEANFIELD_NOTEBOOK_OUT/<stem>/`` (default ``notebooks/_out/<stem>/``).
``--small`` sets ``MEANFIELD_SMALL=1`` (seconds instead of minutes). NAME selects notebooks by
stem prefix (``01``, ``05_langevin``). Exit status 1 if any notebook raised.

Needs the ``notebooks`` extra (``pip install -e '.[notebooks]'``: jupytext, nbclient, ipykernel).
To edit a notebook interactively, open the ``.py`` in JupyterLab with jupytext installed
(``pip install jupyterlab``): jupytext opens percent scripts as notebooks.

``execute`` is what the tests and the documentation build (``scripts/build_docs.py``) call.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def kernel_env(*, small: bool, fig_out: Path | None = None, threads: int | None = None) -> dict:
    """The environment of the kernel: the caller's, without a forced matplotlib backend (the
    kernel then picks the inline one), plus MEANFIELD_SMALL / MEANFIELD_NOTEBOOK_OUT / thread caps."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.pop("MEANFIELD_SMALL", None)
    if small:
        env["MEANFIELD_SMALL"] = "1"
    if fig_out is not None:
        env["MEANFIELD_NOTEBOOK_OUT"] = str(fig_out)
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def execute(path: Path, ipynb: Path, *, small: bool = True, fig_out: Path | None = None,
            threads: int | None = None, timeout: int = 1800):
    """Run the percent script ``path`` cell by cell in a fresh kernel and write the executed
    notebook to ``ipynb``. Returns the notebook (an ``nbformat.NotebookNode``); raises
    ``nbclient.exceptions.CellExecutionError`` (the failing cell and its traceback) on an error,
    after writing the partly executed notebook."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(path.parent)}})
    ipynb = Path(ipynb)
    ipynb.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.execute(env=kernel_env(small=small, fig_out=fig_out, threads=threads))
    finally:
        nbformat.write(nb, ipynb)
    return nb


def stdout_of(nb) -> str:
    """Everything the notebook printed to stdout, in cell order (what a script run prints)."""
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", [])
                   if out.output_type == "stream" and out.name == "stdout")


def images_of(nb) -> int:
    """The number of rendered images (PNG, GIF or inline <img>) among the cell outputs."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            n += any(k in data for k in ("image/png", "image/gif", "image/jpeg"))
            n += "<img " in data.get("text/html", "")
    return n


def _select(names):
    if not names:
        return NOTEBOOKS
    chosen = [p for p in NOTEBOOKS if any(p.stem.startswith(n) for n in names)]
    unknown = [n for n in names if not any(p.stem.startswith(n) for p in NOTEBOOKS)]
    if unknown:
        sys.exit(f"notebooks: no notebook named {', '.join(unknown)} "
                 f"(have {', '.join(p.stem for p in NOTEBOOKS)})")
    return chosen


def main(argv=None) -> int:
    """The command line above; each notebook runs in its own process (``--one``), J at a time."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="notebook stems or prefixes (default: all)")
    ap.add_argument("--small", action="store_true", help="MEANFIELD_SMALL=1: the small mode")
    ap.add_argument("--out", type=Path, default=NOTEBOOK_DIR / "_out",
                    help="folder of the executed .ipynb files (default notebooks/_out)")
    ap.add_argument("--fig-out", type=Path, default=None,
                    help="MEANFIELD_NOTEBOOK_OUT: folder of the saved figures "
                         "(default notebooks/_out)")
    ap.add_argument("--jobs", type=int, default=1, help="notebooks run at a time")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    chosen = _select(args.names)
    if args.one:  # one notebook, in this process
        (path,) = chosen
        execute(path, args.out / f"{path.stem}.ipynb", small=args.small, fig_out=args.fig_out,
                threads=1 if args.jobs > 1 else None)
        return 0

    def run(path):
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", path.stem, "--out", str(args.out),
               "--jobs", str(args.jobs)] + (["--small"] if args.small else []) \
            + (["--fig-out", str(args.fig_out)] if args.fig_out else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        status = "ok" if res.returncode == 0 else "FAILED"
        print(f"{path.stem:20s} {status}  {time.perf_counter() - t0:6.1f} s  -> "
              f"{args.out / (path.stem + '.ipynb')}", flush=True)
        if res.returncode:
            print(res.stderr[-4000:], file=sys.stderr)
        return res.returncode

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        codes = list(pool.map(run, chosen))
    return int(any(codes))


if __name__ == "__main__":
    sys.exit(main())
