"""Build the documentation site into ``docs/_build/html`` (``make docs``).

    python scripts/build_docs.py [--full] [--notebooks DIR] [--no-strict] [--jobs J] [--build-dir DIR]

Sphinx reads a staged source tree, ``docs/_build/src`` (generated here, ignored by git, never
edited by hand), with the configuration ``docs/conf.py``. Nothing is retyped: every page is
made from a file the repository already keeps —

- ``index``: README.md's story (its introduction, *Two commands*, *Gallery*);
- ``guide/*``: README.md's other sections, one page each, and docs/*.md;
- ``reproductions``: README.md's *Paper vs meanfield* table, with a column linking each row to
  the experiment (and notebook) that produces it (``REPRODUCED_BY`` below; a row without an
  entry fails a strict build);
- ``notebooks/*``: the notebooks, executed through a Jupyter kernel (small mode unless
  ``--full``) with their outputs: taken from ``--notebooks DIR`` (``DIR/<stem>.ipynb``, as the
  tests leave them) or from ``.cache/docs-notebooks/`` (keyed by a hash of the notebook and the
  package's sources), executed only when missing;
- ``api/*``: one page per module, one autodoc entry per public function and class defined there
  (the objects ``tests/test_docs.py`` requires a docstring of) with its public methods;
- ``cli``: every ``meanfield`` subcommand's help, from the argparse parser ``meanfield.cli._parser()``;
- ``experiments``: every registered experiment's documentation, views and config keys, from
  its declaration (``meanfield.experiments``);
- ``benchmarks``: benchmarks/README.md.

Links between these files (``docs/pde.md``, ``notebooks/02_mmn_pde.py``, ``meanfield/pde/radial.py``,
``docs/gallery/x.png``) are rewritten to the pages they became; a link to another repository file
becomes its path in code font. Strict mode (the default) passes ``-W``: any Sphinx warning
(broken cross-reference, unparsable docstring, public object without a docstring) or a notebook
that raised or drew no figure fails the build (exit status 1).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BUILD = DOCS / "_build"          # --build-dir: the staged sources, doctrees and html go here
SRC = BUILD / "src"
HTML = BUILD / "html"
CACHE = ROOT / ".cache" / "docs-notebooks"
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(DOCS)]  # this checkout's meanfield, whatever is installed
import notebooks as nbrun  # noqa: E402  (scripts/notebooks.py)

# README sections: the landing page keeps these; "Paper vs meanfield" is its own page; the
# sections listed in DROP are covered by the navigation; every other section is a guide page
LANDING = ("Two commands", "Gallery")
REPRODUCTIONS = "Paper vs meanfield"
NOTEBOOK_SECTION = "Notebooks"
DROP = ("Further reading",)
GUIDE_ORDER = ("Quickstart", "Conventions", "Runs that survive", "Sweeps", "Mean-field against lazy", "Performance",
               "Your network", "Layout", "KeOps", "Tests")
# the "Paper vs meanfield" rows: first cell's prefix → (experiments, notebooks) that produce it
REPRODUCED_BY = {
    "MMN 2018, Fig. 1": (["mmn-isotropic"], ["02_mmn_pde"]),
    "MMN 2018, bad initialisation": (["mmn-bifurcation"], []),
    "MMN Thm. 3": (["chaos-rate"], []),
    "MMN Prop. 1": (["n-scaling"], ["03_n_dependence"]),
    "Chizat–Bach 2018, ReLU in 2-D": (["cb-relu2d"], ["04_chizat_bach"]),
    "Chizat–Bach 2018, loss vs m": (["cb-threshold"], ["04_chizat_bach"]),
    "Chizat 2022, mean-field Langevin": (["mfld-torus"], ["05_langevin"]),
    "Chizat 2022 (2-D grid PDE)": (["pde2d-torus", "pde2d-teacher"], []),
    "Chizat et al. 2025–26, ResNets": (["resnet-limit"], ["06_resnet_cot"]),
    "Barboni–Peyré–Vialard 2022, RKHS ResNet": (["resnet-rkhs"], ["07_rkhs_resnet"]),
    "seeds: linear −Id obstruction": (["linear-obstruction"], ["07_rkhs_resnet"]),
    "Chizat–Bach 2020, logistic loss": (["dataset"], ["08_your_network"]),
    "Barboni–Peyré–Vialard 2022, real data": (["resnet-digits"], []),
    "Chizat–Oyallon–Bach 2019, lazy training": (["lazy-vs-meanfield"], ["09_lazy_vs_meanfield"]),
    "Geiger–Spigler–Jacot–Wyart 2020": (["lazy-vs-meanfield"], ["09_lazy_vs_meanfield"]),
    "Robin–Scaman–Lelarge 2022": ([], ["09_lazy_vs_meanfield"]),
}

problems: list[str] = []  # what a strict build refuses before Sphinx runs


def problem(msg: str) -> None:
    """Record (and print) a problem found while staging; a strict build fails on any."""
    problems.append(msg)
    print(f"build_docs: WARNING: {msg}", file=sys.stderr)


# ---------------------------------------------------------------- markdown staging helpers

def slug(title: str) -> str:
    """A file name for a section title: ``Runs that survive`` → ``runs-that-survive``."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def sections(text: str, level: int = 2):
    """Split markdown at headings of ``level`` (outside code fences):
    (preamble, [(title, body including its heading line), ...])."""
    head, parts, fence = [], [], False
    cur = head
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and re.match("#" * level + r" \S", line):
            cur = [line]
            parts.append((line[level + 1:].strip(), cur))
        else:
            cur.append(line)
    return "".join(head), [(t, "".join(b)) for t, b in parts]


def promote(text: str, by: int = 1) -> str:
    """Raise every heading (outside code fences) by ``by`` levels: ``## A`` → ``# A``."""
    out, fence = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"(#{2,6}) ", line)
        out.append(line[by:] if m and len(m.group(1)) > by else line)
    return "".join(out)


def staged_target(repo_path: str) -> str | None:
    """Where a repository file's page or asset lives in the staged tree (None: nowhere)."""
    p = repo_path
    if p.startswith("docs/gallery/"):
        return "gallery/" + p[len("docs/gallery/"):]
    if p == "README.md":
        return "index.md"
    if p == "benchmarks/README.md":
        return "benchmarks.md"
    m = re.fullmatch(r"docs/([^/]+)\.md", p)
    if m:
        return f"guide/{m.group(1)}.md"
    m = re.fullmatch(r"notebooks/(\d\d_\w+)\.(py|ipynb)", p)
    if m:
        return f"notebooks/{m.group(1)}.ipynb"
    m = re.fullmatch(r"(meanfield/[\w/]+)\.py", p)
    if m:
        mod = m.group(1).replace("/", ".").removesuffix(".__init__")
        return f"api/{mod}.md"
    return None


def rewrite_links(text: str, source_dir: str, page: str) -> str:
    """Rewrite the relative links and <img src> of a markdown file that lives in the repository
    folder ``source_dir`` and is staged as ``page``: to the staged page or asset, relative to
    ``page``; a link to any other repository file becomes its path in code font."""
    page_dir = os.path.dirname(page)

    def target(raw: str):
        path, _, frag = raw.partition("#")
        if not path:
            return raw  # an in-page anchor
        repo = os.path.normpath(os.path.join(source_dir, path))
        new = staged_target(repo)
        if new is None:
            return None
        rel = os.path.relpath(new, page_dir or ".")
        return rel + ("#" + frag if frag else "")

    def link(m):
        bang, label, raw = m.group(1), m.group(2), m.group(3)
        if re.match(r"[a-z]+:", raw) or raw.startswith("#"):
            return m.group(0)
        new = target(raw)
        if new is None:
            repo = os.path.normpath(os.path.join(source_dir, raw))
            if not (ROOT / repo).exists():
                problem(f"{page}: link to {raw!r}, which does not exist")
            return label if label.startswith("`") else f"`{repo}`"
        return f"{bang}[{label}]({new})"

    def img(m):
        new = target(m.group(2))
        return m.group(1) + (new or m.group(2)) + m.group(3)

    text = re.sub(r"(!?)\[([^\]\n]*)\]\(([^)\s]+)\)", link, text)
    return re.sub(r'(<img [^>]*src=")([^"]+)(")', img, text)


# Markdown reads "_" after a symbol or a bracket as the start of an emphasis (∂_t … E_{x'}
# became an italic span): such underscores are escaped outside code, maths, tags and link targets
_VERBATIM = re.compile(r"(```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]+\$|<[^>\n]+>|\]\([^)\s]*\))", re.S)


def markdown_maths(text: str) -> str:
    """``text`` with every formula written with TeX sub- or superscripts in braces (E_{x'}[…],
    e^{−μt}) as ``$…$`` maths, the way docs/conf.py renders docstrings (not on table rows,
    whose "|" would split the maths), and every other "_" that follows a symbol or punctuation
    mark (not a letter, digit, space or backslash) written ``\\_``, outside code, maths, HTML
    tags and link targets."""
    from conf import _formula_span, _formula_tokens   # docs/conf.py, on the path (main)

    def maths(seg: str) -> str:
        out = []
        for line in seg.split("\n"):
            if not line.lstrip().startswith("|"):
                pieces, last = [], 0
                for a, b in _formula_tokens(line):
                    span = _formula_span(line[a:b])
                    pieces += [line[last:a], re.sub(r":math:`(.*)`", r"$\1$", span)]
                    last = b
                line = "".join(pieces) + line[last:]
            out.append(line)
        return "\n".join(out)

    parts = _VERBATIM.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = maths(parts[i])
    parts = _VERBATIM.split("".join(parts))
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"(?<=[^\w\s\\])_(?=\S)", r"\\_", parts[i])
    return "".join(parts)


_staged: set[str] = set()  # pages written by this build; any other file in SRC is stale


def write(rel: str, text: str) -> None:
    """Write a staged file, leaving it untouched when unchanged (Sphinx rebuilds less)."""
    _staged.add(rel)
    if rel.endswith(".md"):
        text = markdown_maths(text)
    path = SRC / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def toctree(entries, caption=None, maxdepth=1, hidden=False) -> str:
    """A MyST toctree directive."""
    opts = f":maxdepth: {maxdepth}\n" + (f":caption: {caption}\n" if caption else "") \
        + (":hidden:\n" if hidden else "")
    return "```{toctree}\n" + opts + "\n" + "\n".join(entries) + "\n```\n"


# ---------------------------------------------------------------- pages

def stage_readme(notebook_stems) -> dict:
    """index.md, guide/*.md, reproductions.md and notebooks/index.md from README.md."""
    readme = (ROOT / "README.md").read_text()
    preamble, parts = sections(readme)
    landing, guide, repro, nb_section = [], [], None, None
    for title, body in parts:
        if title.startswith(LANDING):
            landing.append(body)
        elif title.startswith(REPRODUCTIONS):
            repro = body
        elif title.startswith(NOTEBOOK_SECTION):
            nb_section = body
        elif not title.startswith(DROP):
            guide.append((title, body))
    rank = {t: i for i, t in enumerate(GUIDE_ORDER)}
    guide.sort(key=lambda tb: min([rank[k] for k in rank if tb[0].startswith(k)] or [len(rank)]))
    guide_pages = []
    for title, body in guide:
        name = "guide/" + slug(title.split(",")[0])
        write(name + ".md", rewrite_links(promote(body), ".", name + ".md"))
        guide_pages.append(name)
    extra = sorted((p.stem for p in DOCS.glob("*.md") if p.stem.lower() != "readme"),
                   key=lambda stem: (stem != "concepts", stem))
    for stem in extra:
        write(f"guide/{stem}.md", rewrite_links((DOCS / f"{stem}.md").read_text(), "docs",
                                                 f"guide/{stem}.md"))
    write("guide/index.md", "# User guide\n\nConcepts, conventions and recipes: README.md's "
          "sections and the longer write-ups of docs/.\n\n"
          + toctree([p.removeprefix("guide/") for p in guide_pages], "From the README")
          + "\n" + toctree(extra, "Write-ups"))
    # notebooks
    body = nb_section or "# Notebooks\n"
    write("notebooks/index.md", rewrite_links(promote(body), ".", "notebooks/index.md")
          + "\nEach page below is the notebook executed at documentation build time (small mode), "
            "with its outputs.\n\n" + toctree(notebook_stems, "Notebooks"))
    # reproductions
    if repro is None:
        problem("README.md has no 'Paper vs meanfield' section")
        repro = "## Paper vs meanfield\n"
    write("reproductions.md", rewrite_links(promote(reproductions_table(repro)), ".",
                                            "reproductions.md")
          + "\nEach experiment's page gives its configuration and how the paper's conventions "
            "map onto meanfield's; `meanfield run NAME --out DIR` runs it "
            "([command line](cli.md)).\n")
    # landing page
    nav = ("\n## Contents\n\n"
           + toctree(["guide/index", "notebooks/index", "reproductions", "experiments",
                      "benchmarks", "api/index", "cli"], maxdepth=1))
    why = ("\n```{admonition} About this site\nBuilt by `make docs` with Sphinx, MyST-NB and the "
           "Furo theme — the toolchain of the field's libraries (POT, geomloss, ott-jax): autodoc "
           "reads the docstrings as they are, and MyST-NB renders the notebooks executed once, "
           "with their outputs. Every page is generated from a file of the repository.\n```\n")
    write("index.md", rewrite_links(preamble + why + "\n" + "".join(landing) + nav, ".", "index.md"))
    return {"guide": guide_pages}


def reproductions_table(body: str) -> str:
    """The README's table with a last column linking each row to what produces it."""
    out, seen = [], set()
    for line in body.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = line.split("|")
            first = cells[1].strip()
            if first == "source":
                line += " produced by |"
            elif set(first) <= set("-: "):
                line += "---|"
            else:
                key = next((k for k in REPRODUCED_BY if first.startswith(k)), None)
                if key is None:
                    problem(f"Paper vs meanfield row {first!r} has no entry in "
                            "scripts/build_docs.py REPRODUCED_BY")
                    line += " |"
                else:
                    seen.add(key)
                    exps, nbs = REPRODUCED_BY[key]
                    links = [f"[`{e}`](meanfield/experiments/{experiment_module(e)}.py)"
                             for e in exps]
                    links += [f"[notebook {s[:2]}](notebooks/{s}.py)" for s in nbs]
                    line += " " + " · ".join(links) + " |"
        out.append(line)
    for key in set(REPRODUCED_BY) - seen:
        problem(f"REPRODUCED_BY entry {key!r} matches no row of README's table")
    return "\n".join(out) + "\n"


def experiment_module(name: str) -> str:
    """The module of experiment ``name`` (``meanfield.experiments.EXPERIMENTS``)."""
    from meanfield.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        problem(f"REPRODUCED_BY names an unknown experiment {name!r}")
        return name.replace("-", "_")
    return EXPERIMENTS[name]


def public_objects():
    """{module name: [(name, object)]}: the public functions and classes defined in each module
    (the same rule as tests/test_docs.py: ``__all__`` or non-underscore names, defined there)."""
    import meanfield

    mods = {"meanfield": meanfield}
    for info in pkgutil.walk_packages(meanfield.__path__, "meanfield."):
        if info.name != "meanfield.__main__":
            mods[info.name] = importlib.import_module(info.name)
    out = {}
    for name, mod in sorted(mods.items()):
        names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
        objs = []
        for n in names:
            obj = getattr(mod, n, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == name \
                    and obj.__name__ == n:
                objs.append((n, obj))
        out[name] = objs
    return out


def stage_api() -> None:
    """api/index.md and one page per module."""
    groups: dict[str, list[str]] = {}
    for mod, objs in public_objects().items():
        # autodoc parses docstrings as reStructuredText: its directives go in an eval-rst block
        rst = [f".. automodule:: {mod}\n"]
        for name, obj in objs:
            if inspect.isclass(obj):
                rst.append(f".. autoclass:: {mod}.{name}\n   :members:\n   :show-inheritance:\n")
            else:
                rst.append(f".. autofunction:: {mod}.{name}\n")
        write(f"api/{mod}.md", f"# `{mod}`\n\n```{{eval-rst}}\n" + "\n".join(rst) + "```\n")
        parts = mod.split(".")
        group = parts[1] if len(parts) > 2 or (len(parts) == 2 and
                                                (ROOT / "meanfield" / parts[1]).is_dir()) else ""
        groups.setdefault(group, []).append(mod)
    text = ["# API reference\n",
            "Every public function, class, method and property of the package, from its "
            "docstring (formula, array shapes, the paper it follows). The top-level "
            "`meanfield` namespace re-exports the main objects (`mf.Unit`, `mf.gradient_flow`, "
            "…); each is documented in the module that defines it.\n"]
    for group, mods in groups.items():
        text.append(toctree(mods, f"meanfield.{group}" if group else "meanfield"))
    write("api/index.md", "\n".join(text))


def stage_cli() -> None:
    """cli.md: the help of ``meanfield`` and of each subcommand, from the argparse parser."""
    import argparse as ap

    from meanfield import cli

    os.environ["COLUMNS"] = "80"  # argparse wraps help at the terminal's width: the page's
    parser = cli._parser()
    (sub,) = [a for a in parser._actions if isinstance(a, ap._SubParsersAction)]
    text = ["# Command line\n",
            "Generated at build time from the argparse parser (`meanfield.cli._parser()`): "
            "this is what `meanfield --help` and `meanfield SUBCOMMAND --help` print.\n",
            "```text\n" + parser.format_help() + "```\n"]
    for name, p in sub.choices.items():
        text.append(f"(cli-{name})=\n## `meanfield {name}`\n\n```text\n{p.format_help()}```\n")
    write("cli.md", "\n".join(text))


def experiments_page() -> str:
    """experiments.md: one section per registered experiment (``meanfield.experiments.names()``,
    entry points included): its documentation, movie views, every config key with its type,
    default, meaning (``Config.key_help()``, what ``meanfield config`` prints) and presets,
    and the keys a resume may change — from the declarations alone, so an experiment
    registered by one line appears here without editing this script."""
    import dataclasses

    from meanfield.experiments import get_experiment, names, views_of

    text = ["# Experiments\n",
            "Every experiment `meanfield list` shows, from its own declaration (its module "
            "docstring and its Config); `meanfield config NAME` prints the same keys and "
            "`meanfield run NAME --set scale=small --out DIR` runs its small mode.\n"]
    for name in names():
        exp = get_experiment(name)
        doc = (exp.__doc__ or name).strip()
        cfg = exp.Config
        types = cfg.field_types()
        presets = {f"{k}={v}": vals for k, table in getattr(cfg, "_presets", {}).items()
                   for v, vals in table.items() if vals}
        text.append(f"(experiment-{name})=\n## `{name}`\n\n```text\n{doc}\n```\n")
        views = views_of(exp)
        if views:
            text.append(f"Movies (`meanfield animate DIR --what VIEW`): {', '.join(views)}.\n")
        meaning = cfg.key_help() if hasattr(cfg, "key_help") else {}
        rows = ["| key | type | default | meaning | presets |", "|---|---|---|---|---|"]
        for f in dataclasses.fields(cfg):
            pre = "; ".join(f"{p}: `{vals[f.name]!r}`" for p, vals in presets.items() if f.name in vals)
            text_ = meaning.get(f.name, "").replace("|", "\\|")          # a table cell
            rows.append(f"| `{f.name}` | {types[f.name].__name__} | `{f.default!r}` | {text_} | {pre} |")
        text.append("\n".join(rows) + "\n")
        text.append("Keys a resume may change: "
                    + (", ".join(f"`{k}`" for k in cfg.resume_mutable) or "none") + ".\n")
    return "\n".join(text)


def stage_experiments() -> None:
    """experiments.md (:func:`experiments_page`)."""
    write("experiments.md", experiments_page())


def stage_benchmarks() -> None:
    """benchmarks.md from benchmarks/README.md."""
    write("benchmarks.md", rewrite_links((ROOT / "benchmarks" / "README.md").read_text(),
                                         "benchmarks", "benchmarks.md"))


def _package_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "meanfield").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def stage_notebooks(given: Path | None, small: bool, jobs: int) -> list[str]:
    """notebooks/<stem>.ipynb: executed notebooks, from ``given`` or the cache (executed there
    when missing). Returns the stems."""
    import nbformat

    pkg = _package_hash()
    todo, sources = [], {}
    for path in nbrun.NOTEBOOKS:
        if given is not None:
            sources[path.stem] = given / f"{path.stem}.ipynb"
            if not sources[path.stem].exists():
                problem(f"--notebooks {given}: no {path.stem}.ipynb")
            continue
        key = hashlib.sha256(path.read_bytes() + pkg.encode() + bytes([small])).hexdigest()[:16]
        sources[path.stem] = CACHE / f"{path.stem}-{'small' if small else 'full'}-{key}.ipynb"
        if not sources[path.stem].exists():
            todo.append(path)

    def run(path):
        t0 = time.perf_counter()
        dest = sources[path.stem]
        tmp = CACHE / "run" / path.stem
        cmd = [sys.executable, str(ROOT / "scripts" / "notebooks.py"), "--one", path.stem,
               "--out", str(tmp), "--fig-out", str(tmp / "figures"), "--jobs", str(jobs)] \
            + (["--small"] if small else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            problem(f"notebook {path.stem} failed:\n{res.stderr[-3000:]}")
        else:
            for old in CACHE.glob(f"{path.stem}-{'small' if small else 'full'}-*.ipynb"):
                old.unlink()
            shutil.copy(tmp / f"{path.stem}.ipynb", dest)
        print(f"build_docs: executed {path.stem} in {time.perf_counter() - t0:.0f} s", flush=True)

    if todo:
        CACHE.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(run, todo))
    stems = []
    for stem, src in sources.items():
        if not src.exists():
            continue
        nb = nbformat.read(src, as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        if errors:
            problem(f"notebook {stem}: a cell raised {errors[0].ename}: {errors[0].evalue}")
        if nbrun.images_of(nb) == 0:
            problem(f"notebook {stem}: no figure among its outputs")
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = markdown_maths(cell.source)
        write(f"notebooks/{stem}.ipynb", nbformat.writes(nb))
        stems.append(stem)
    return stems


def stage(given_notebooks: Path | None, small: bool, jobs: int) -> None:
    """Write the whole source tree docs/_build/src (stale generated pages removed)."""
    t0 = time.perf_counter()
    SRC.mkdir(parents=True, exist_ok=True)
    before = {p for p in SRC.rglob("*") if p.is_file() and not p.is_symlink()}
    gallery = SRC / "gallery"
    if not gallery.is_symlink():
        if gallery.exists():
            shutil.rmtree(gallery)
        gallery.symlink_to(DOCS / "gallery", target_is_directory=True)
    stems = stage_notebooks(given_notebooks, small, jobs)
    stage_readme(stems)
    stage_api()
    stage_cli()
    stage_experiments()
    stage_benchmarks()
    written = {SRC / p for p in _staged}
    for stale in before - written:
        stale.unlink()
    print(f"build_docs: staged {len(written)} pages in {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv=None) -> int:
    """The command line in the module docstring."""
    global BUILD, SRC, HTML
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="execute the notebooks in their full mode (minutes each)")
    ap.add_argument("--notebooks", type=Path, default=None,
                    help="folder of executed notebooks <stem>.ipynb to use instead of the cache")
    ap.add_argument("--no-strict", dest="strict", action="store_false",
                    help="report warnings without failing")
    ap.add_argument("--jobs", type=int, default=2, help="Sphinx processes and notebooks at a time")
    ap.add_argument("--build-dir", type=Path, default=BUILD,
                    help="folder of the staged sources (src/), doctrees/ and html/ "
                         "(default docs/_build; a fresh one rebuilds every page)")
    args = ap.parse_args(argv)
    BUILD = args.build_dir.resolve()
    SRC, HTML = BUILD / "src", BUILD / "html"
    args.out = HTML
    t0 = time.perf_counter()
    stage(args.notebooks, small=not args.full, jobs=args.jobs)
    # -E: read every page afresh (a warning is reported on every build, and every page's
    # navigation follows the current table of contents); about 25 s on 2 cores
    cmd = [sys.executable, "-m", "sphinx", "-E", "-b", "html", "-q", "-c", str(DOCS),
           "-d", str(BUILD / "doctrees"), "-j", str(args.jobs), str(SRC), str(args.out)]
    if args.strict:
        cmd[4:4] = ["-W", "--keep-going"]
    res = subprocess.run(cmd)
    status = res.returncode or (1 if args.strict and problems else 0)
    print(f"build_docs: {'built' if status == 0 else 'FAILED'} {args.out} in "
          f"{time.perf_counter() - t0:.0f} s"
          + (f"; {len(problems)} staging problem(s) above" if problems else ""), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
