"""API reference and CLI help: every public object is documented, every option explained.

``test_every_public_object_has_a_docstring`` walks every module of the package (except
``meanfield.__main__``, which runs the command on import) and lists each public function,
class, method and property defined there (not imported from elsewhere) whose docstring is
empty.  A method's docstring may be inherited from the method it overrides
(``inspect.getdoc``); a class needs its own, and the signature that ``dataclass`` writes in
place of a missing class docstring does not count.  The CLI tests introspect the argparse
parser built by ``meanfield.cli._parser``, plus one subprocess for ``python -m meanfield --help``.

The documentation site itself is built and checked in tests/test_notebooks.py,
beside the notebook executions it renders (one test file runs on one pytest-xdist worker, so
the notebooks run once).
"""
import argparse
import dataclasses
import inspect
import subprocess
import sys

import pytest

from meanfield import cli


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


def _undocumented(public_api):
    """Modules without a docstring, and public objects without one (``_doc``: a method's may
    be inherited from the method it overrides)."""
    missing = []
    for modname, mod, members in public_api:
        if not inspect.getdoc(mod):
            missing.append(f"{modname} (module)")
        missing += [f"{modname}.{qual}" for qual, obj in members if not _doc(obj)]
    return missing


def test_every_public_object_has_a_docstring(public_api):
    missing = _undocumented(public_api)
    assert not missing, f"{len(missing)} public objects without a docstring:\n" + "\n".join(missing)


def test_every_cli_argument_has_help(cli_subparsers):
    action = cli_subparsers
    subs = action.choices
    assert {"run", "resume", "plot", "show", "list", "config", "sweep"} <= set(subs)
    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in subs.items() for a in sub._actions
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    # each subcommand also has its own line in `meanfield --help`
    helped = {c.dest for c in action._choices_actions if (c.help or "").strip()}
    missing += [f"{name} (subcommand)" for name in subs if name not in helped]
    assert not missing, "CLI arguments without a help string:\n" + "\n".join(missing)


def test_every_subcommand_help_exits_zero(capsys, cli_subparsers):
    subs = list(cli_subparsers.choices)
    for sub in subs:
        with pytest.raises(SystemExit) as exc:
            cli.main([sub, "--help"])
        assert exc.value.code == 0, sub
        out = capsys.readouterr().out
        assert out.startswith(f"usage: meanfield {sub}"), (sub, out[:200])


def test_python_m_meanfield_help_exits_zero(cli_subparsers):
    res = subprocess.run([sys.executable, "-m", "meanfield", "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: meanfield")
    for sub in cli_subparsers.choices:
        assert sub in res.stdout, sub
