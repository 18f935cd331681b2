"""API reference and CLI help (issue 8): every public object is documented, every option explained.

``test_every_public_object_has_a_docstring`` walks every module of the package (except
``meanfield.__main__``, which runs the command on import) and lists each public function,
class, method and property defined there (not imported from elsewhere) whose docstring is
empty.  A method's docstring may be inherited from the method it overrides
(``inspect.getdoc``); a class needs its own, and the signature that ``dataclass`` writes in
place of a missing class docstring does not count.  The CLI tests introspect the argparse
parser built by ``meanfield.cli._parser``, plus one subprocess for ``python -m meanfield --help``.

The ``test_docs_site_*`` tests (issue 20) build the documentation site with
``scripts/build_docs.py`` in strict mode (Sphinx ``-W``) from the notebooks the session executed
through a Jupyter kernel (conftest's ``notebook_runs``), then check that every public object
has an anchor, every notebook page a rendered figure and every subcommand a section.
They skip without the docs extra (``pip install -e '.[docs]'``; ``make test`` installs it).
"""
import argparse
import dataclasses
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import meanfield
from meanfield import cli


def _public_names(mod):
    names = getattr(mod, "__all__", None)
    return names if names is not None else [n for n in vars(mod) if not n.startswith("_")]


def _doc(obj) -> str:
    """The docstring: a function's may be inherited (``inspect.getdoc``), a class needs its
    own, and the signature that ``dataclass`` writes for a class without one
    (``Config(N: int = 1000, ...)``) counts as none."""
    if not inspect.isclass(obj):
        return inspect.getdoc(obj) or ""
    doc = inspect.cleandoc(obj.__doc__ or "")
    if dataclasses.is_dataclass(obj):
        try:
            auto = obj.__name__ + str(inspect.signature(obj)).replace(" -> None", "")
        except (TypeError, ValueError):
            auto = None
        if doc == auto:
            return ""
    return doc


def _undocumented():
    missing = []
    for info in pkgutil.walk_packages(meanfield.__path__, "meanfield."):
        if info.name == "meanfield.__main__":
            continue
        mod = importlib.import_module(info.name)
        if not inspect.getdoc(mod):
            missing.append(f"{info.name} (module)")
        for name in _public_names(mod):
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue  # constants, imported modules, type aliases
            if obj.__module__ != info.name:
                continue  # imported from another module: checked there
            if not _doc(obj):
                missing.append(f"{info.name}.{name}")
            if inspect.isclass(obj):
                for attr, raw in vars(obj).items():
                    if attr.startswith("_"):
                        continue
                    func = getattr(raw, "__func__", raw)  # staticmethod / classmethod
                    if inspect.isfunction(func) or isinstance(raw, property):
                        if not inspect.getdoc(getattr(obj, attr)):
                            missing.append(f"{info.name}.{name}.{attr}")
    return missing


def test_every_public_object_has_a_docstring():
    missing = _undocumented()
    assert not missing, f"{len(missing)} public objects without a docstring:\n" + "\n".join(missing)


def _subparsers_action(parser) -> argparse._SubParsersAction:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_every_cli_argument_has_help():
    parser = cli._parser()
    action = _subparsers_action(parser)
    subs = action.choices
    assert {"run", "resume", "plot", "show", "list", "config", "sweep"} <= set(subs)
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in subs.items() for a in sub._actions
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    # each subcommand also has its own line in `meanfield --help`
    helped = {c.dest for c in action._choices_actions if (c.help or "").strip()}
    missing += [f"{name} (subcommand)" for name in subs if name not in helped]
    assert not missing, "CLI arguments without a help string:\n" + "\n".join(missing)


def test_every_subcommand_help_exits_zero(capsys):
    subs = list(_subparsers_action(cli._parser()).choices)
    for sub in subs:
        with pytest.raises(SystemExit) as exc:
            cli.main([sub, "--help"])
        assert exc.value.code == 0, sub
        out = capsys.readouterr().out
        assert out.startswith(f"usage: meanfield {sub}"), (sub, out[:200])


def test_python_m_meanfield_help_exits_zero():
    res = subprocess.run([sys.executable, "-m", "meanfield", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: meanfield")
    for sub in _subparsers_action(cli._parser()).choices:
        assert sub in res.stdout, sub


# ---------------------------------------------------------------- the documentation site (issue 20)

def _public_anchors():
    """The HTML ids the API reference must hold: every public function and class of every
    module (the objects ``_undocumented`` walks) and their public methods and properties."""
    ids = {}
    for info in pkgutil.walk_packages(meanfield.__path__, "meanfield."):
        if info.name == "meanfield.__main__":
            continue
        mod = importlib.import_module(info.name)
        for name in _public_names(mod):
            obj = getattr(mod, name, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != info.name:
                continue
            ids[f"{info.name}.{name}"] = info.name
            if inspect.isclass(obj):
                for attr, raw in vars(obj).items():
                    func = getattr(raw, "__func__", raw)
                    if not attr.startswith("_") and (inspect.isfunction(func) or isinstance(raw, property)):
                        ids[f"{info.name}.{name}.{attr}"] = info.name
    return ids


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
                         cwd=Path(meanfield.__file__).parents[1], capture_output=True,
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


def test_docs_site_has_an_anchor_for_every_public_object(docs_site):
    missing = []
    pages = {}
    for anchor, module in _public_anchors().items():
        if module not in pages:
            pages[module] = (docs_site / "api" / f"{module}.html").read_text()
        if f'id="{anchor}"' not in pages[module]:
            missing.append(anchor)
    assert not missing, f"{len(missing)} public objects without an anchor:\n" + "\n".join(missing)


def test_docs_site_notebook_pages_show_figures(docs_site):
    """Every notebook page holds its outputs: at least one rendered figure."""
    import re

    stems = [p.stem for p in (Path(meanfield.__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.py")]
    assert len(stems) >= 8
    for stem in stems:
        html = (docs_site / "notebooks" / f"{stem}.html").read_text()
        assert re.search(r'<img [^>]*src="(\.\./_images/|data:image/)', html), stem


def test_docs_site_cli_reference_comes_from_the_parser(docs_site):
    html = (docs_site / "cli.html").read_text()
    for sub in _subparsers_action(cli._parser()).choices:
        assert f'id="cli-{sub}"' in html, sub
