"""API reference and CLI help (issue 8): every public object is documented, every option explained.

``test_every_public_object_has_a_docstring`` walks every module of the package (except
``meanfield.__main__``, which runs the command on import) and lists each public function,
class, method and property defined there (not imported from elsewhere) whose docstring is
empty.  A method's docstring may be inherited from the method it overrides
(``inspect.getdoc``); a class needs its own, and the signature that ``dataclass`` writes in
place of a missing class docstring does not count.  The CLI tests introspect the argparse
parser built by ``meanfield.cli._parser``, plus one subprocess for ``python -m meanfield --help``.

The documentation site itself (issue 20) is built and checked in tests/test_notebooks.py,
beside the notebook executions it renders (one test file runs on one pytest-xdist worker, so
the notebooks run once).
"""
import argparse
import dataclasses
import importlib
import inspect
import pkgutil
import subprocess
import sys

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
