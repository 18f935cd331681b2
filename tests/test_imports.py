"""The package's import structure (docs/design.md §2), checked statically.

Every module under ``meanfield/`` is parsed with :mod:`ast` (nothing is imported) and ALL
its import statements are collected — module level, inside functions, under
``if TYPE_CHECKING:`` — absolute (``import meanfield.x``, ``from meanfield.x import y``) and
relative (``from ..x import y``), resolved to meanfield module names:

* ``from P import name`` is an edge to the submodule ``P.name`` when that module exists,
  else to ``P`` (the package's ``__init__`` when P is a package), so ``from .. import io``
  in a subpackage is an edge to ``meanfield.io`` and ``from ..interact import evaluate`` one
  to ``meanfield.interact`` (its ``__init__``);
* ``import P.Q.R`` is an edge to the longest existing module P.Q.R / P.Q / P;
* ``importlib.import_module(name[, package])`` is an import too: a constant name is resolved
  like a statement; the experiment registry's ``import_module(f".{EXPERIMENTS[name]}",
  __name__)`` (an f-string over a module-level dict of strings) is an edge to each module the
  dict names; any other computed name, an edge to every module under its constant prefix;
* the parent packages that Python runs on the way (``meanfield/__init__`` for everything)
  are not edges: only what a statement names is.

Checks: (a) no import cycle (a strongly connected component of more than one module, or a
module importing itself); (b) the rooms of §2 — among measure < models < interact < dynamics
a room never imports a later one; pde/ and diagnostics never import dynamics; models never
imports interact (a backend); the base (those rooms, pde, diagnostics) never imports the top
(experiments, io, plotting, cli, and with them §3's run machinery and entry points:
runner, sweep, distributed, __main__); errors, which anyone may import, imports no meanfield
module.  The package ``meanfield/__init__`` (which re-exports) is exempt as an importer.
Failures name every offending statement as ``path:line: importer -> target``.  The checker
itself is tested on synthetic sources with planted cycles and violations, so each check can
fail.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = "meanfield"
PKG_DIR = Path(__file__).resolve().parents[1] / PKG

ROOMS = ("measure", "models", "interact", "dynamics")          # in this order (§2)
NO_DYNAMICS = ("pde", "diagnostics")                           # never import dynamics
BASE = ROOMS + NO_DYNAMICS
TOP = ("experiments", "io", "plotting", "cli",                # §2: on top of all of them
       "analysis", "figures", "data",
       "runner", "store", "sweep", "distributed", "__main__")  # §3: run machinery, entry points
RUN_MACHINERY = ("experiments", "runner", "store", "sweep", "distributed", "cli", "__main__")
NO_EXPERIMENTS = ("analysis", "figures")                       # arrays and run directories only
LEAF = ("errors",)                                             # imported by anyone


@dataclass(frozen=True)
class Edge:
    importer: str
    target: str
    path: str          # the importer's file, relative to the repository
    line: int
    statement: str

    def __str__(self):
        return f"{self.path}:{self.line}: {self.importer} -> {self.target}   ({self.statement})"


# ---------------------------------------------------------------------------------------
# the checker
# ---------------------------------------------------------------------------------------


def package_sources(pkg_dir: Path = PKG_DIR) -> dict[str, tuple[str, bool, str]]:
    """{module name: (source, is_package, path)} for every .py file under ``pkg_dir``."""
    out = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        rel = f.relative_to(pkg_dir.parent)
        parts = list(rel.with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (f.read_text(encoding="utf-8"), is_pkg, str(rel))
    return out


def _known(name: str, modules) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of ``modules``."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        cand = ".".join(parts[:k])
        if cand in modules:
            return cand
    return None


def _resolve_from(module: str, is_pkg: bool, level: int, what: str | None) -> str:
    """The absolute module named by ``from <level dots><what> import ...`` in ``module``."""
    base = module if is_pkg else module.rpartition(".")[0]
    for _ in range(level - 1):
        if "." not in base:
            raise ValueError(f"relative import beyond the top package in {module}")
        base = base.rpartition(".")[0]
    return f"{base}.{what}" if what else base


def _string_tables(tree) -> dict[str, list[str]]:
    """Module-level ``NAME = {key: "string", ...}`` dicts: {NAME: their string values}."""
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Dict)
                and node.value.values
                and all(isinstance(v, ast.Constant) and isinstance(v.value, str)
                        for v in node.value.values)):
            out[node.targets[0].id] = [v.value for v in node.value.values]
    return out


def _dynamic_targets(module: str, is_pkg: bool, call: ast.Call, modules, tables) -> list[str]:
    """The modules ``importlib.import_module(name, package)`` can import: the one a constant
    name denotes; for f"<prefix>{TABLE[key]}" with TABLE a module-level dict of strings (a
    registry), the modules prefix + each value; for any other computed name, every module
    under its constant prefix."""
    if not call.args:
        return []
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return _resolve_dynamic(module, is_pkg, call, arg.value, True, modules)
    if not isinstance(arg, ast.JoinedStr):
        return []
    lead, vals = "", list(arg.values)
    while vals and isinstance(vals[0], ast.Constant) and isinstance(vals[0].value, str):
        lead += vals.pop(0).value
    sub = vals[0].value if len(vals) == 1 and isinstance(vals[0], ast.FormattedValue) else None
    if (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name)
            and sub.value.id in tables):
        return sorted({t for v in tables[sub.value.id]
                       for t in _resolve_dynamic(module, is_pkg, call, lead + v, True, modules)})
    return _resolve_dynamic(module, is_pkg, call, lead, False, modules)


def _resolve_dynamic(module, is_pkg, call, lead, exact, modules) -> list[str]:
    """The modules the name ``lead`` (exact) or the names starting with it denote, resolving
    leading dots against ``import_module``'s package argument (__name__, __package__, a string)."""
    if lead.startswith("."):
        pkg_arg = call.args[1] if len(call.args) > 1 else next(
            (k.value for k in call.keywords if k.arg == "package"), None)
        if isinstance(pkg_arg, ast.Name) and pkg_arg.id == "__name__":
            anchor = module
        elif isinstance(pkg_arg, ast.Name) and pkg_arg.id == "__package__":
            anchor = module if is_pkg else module.rpartition(".")[0]
        elif isinstance(pkg_arg, ast.Constant) and isinstance(pkg_arg.value, str):
            anchor = pkg_arg.value
        else:
            return []
        dots = len(lead) - len(lead.lstrip("."))
        for _ in range(dots - 1):
            anchor = anchor.rpartition(".")[0]
        name = f"{anchor}.{lead[dots:]}"
    else:
        name = lead
    if not (name == PKG or name.startswith(PKG + ".")):
        return []
    if exact:
        found = _known(name.rstrip("."), modules)
        return [found] if found else []
    return sorted(m for m in modules if m.startswith(name) and m != name)


def module_imports(module: str, source: str, is_pkg: bool, modules, path: str = "") -> list[Edge]:
    """All imports of meanfield modules made anywhere in ``source`` (see the module docstring),
    one edge per (statement line, target)."""
    tree = ast.parse(source, filename=path or module)
    lines = source.splitlines()
    edges, seen = [], set()

    def add(target, node):
        if target is not None and (target, node.lineno) not in seen:
            seen.add((target, node.lineno))
            stmt = lines[node.lineno - 1].strip() if node.lineno <= len(lines) else ""
            edges.append(Edge(module, target, path or module, node.lineno, stmt))

    tables = _string_tables(tree)
    loaders = {"import_module"} | {                      # from importlib import import_module as X
        a.asname for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "importlib"
        for a in n.names if a.name == "import_module" and a.asname}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id in loaders) or (
                    isinstance(f, ast.Attribute) and f.attr == "import_module"):
                for target in _dynamic_targets(module, is_pkg, node, modules, tables):
                    add(target, node)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PKG or alias.name.startswith(PKG + "."):
                    add(_known(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                src = _resolve_from(module, is_pkg, node.level, node.module)
            else:
                src = node.module or ""
                if not (src == PKG or src.startswith(PKG + ".")):
                    continue
            for alias in node.names:
                sub = f"{src}.{alias.name}"
                add(sub if alias.name != "*" and sub in modules else _known(src, modules), node)
    return sorted(edges, key=lambda e: (e.line, e.target))


def import_graph(sources) -> dict[str, list[Edge]]:
    """{module: its edges} for {module: (source, is_package[, path])}."""
    modules = set(sources)
    graph = {}
    for mod, (src, is_pkg, *path) in sources.items():
        graph[mod] = module_imports(mod, src, is_pkg, modules, path[0] if path else "")
    return graph


def find_cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module, and modules that import
    themselves (Tarjan's algorithm; each component sorted, components sorted)."""
    succ = {m: sorted({e.target for e in es if e.target in graph}) for m, es in graph.items()}
    index, low, on_stack, stack, comps = {}, {}, set(), [], []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in succ[v]:
                comps.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            strong(v)
    return sorted(comps)


def cycle_edges(graph, comp) -> list[Edge]:
    """The import statements inside one cycle (both ends in the component)."""
    members = set(comp)
    return [e for m in comp for e in graph[m] if e.target in members]


def shortest_loop(graph, comp) -> list[Edge]:
    """One shortest import loop through the component's first module (its statements)."""
    members, start = set(comp), comp[0]
    prev, frontier = {}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph[v]:
                if e.target == start:
                    loop = [e]
                    while loop[0].importer != start:
                        loop.insert(0, prev[loop[0].importer])
                    return loop
                if e.target in members and e.target not in prev:
                    prev[e.target] = e
                    nxt.append(e.target)
        frontier = nxt
    return []


def describe_cycle(graph, comp) -> str:
    """A readable account of one cycle: a shortest loop, then every import inside it."""
    loop = shortest_loop(graph, comp)
    path = " -> ".join([e.importer for e in loop] + [comp[0]])
    return (f"cycle among {len(comp)} module(s) {{{', '.join(comp)}}}, e.g. {path}:\n  "
            + _report(loop) + "\n  all imports inside it:\n  " + _report(cycle_edges(graph, comp)))


def area(module: str) -> str | None:
    """The first component below the package (``models`` for meanfield.models.tasks), or None
    for the package's own ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def registered_experiments(sources) -> set[str]:
    """The module names of the experiments registered in ``meanfield/experiments/__init__.py``
    (the values of its ``EXPERIMENTS`` dict, read from its source)."""
    src = sources.get(f"{PKG}.experiments", ("", True, ""))[0]
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXPERIMENTS"
                                                for t in node.targets):
            return {f"{PKG}.experiments.{v}" for v in ast.literal_eval(node.value).values()}
    return set()


def private_imports(sources) -> list[str]:
    """``path:line: importer imports _name from target`` for every ``from X import _name`` of
    an underscore-private name of a module in another room, or of another module of
    experiments/ (a room's modules may share their private helpers; dunders such as
    __version__ excepted)."""
    out = []
    for mod, (src, is_pkg, path) in sources.items():
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = mod if is_pkg else mod.rpartition(".")[0]
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if not target.startswith(PKG) or target == mod:
                continue
            if area(target) == area(mod) != "experiments":   # a room's own shared helpers
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    out.append(f"{path}:{node.lineno}: {mod} imports {alias.name} from {target}")
    return out


def rule_violations(graph, experiments=frozenset()) -> dict[str, list[Edge]]:
    """{rule: the edges that break it} for the rules of docs/design.md §2 (module docstring);
    ``experiments``: the registered experiment modules (no one of them imports another)."""
    out = {"room order": [], "pde/diagnostics import dynamics": [],
           "models import interact": [], "base imports top": [], "errors is a leaf": [],
           "analysis/figures import experiments": [], "experiments import each other": []}
    for mod, edges in graph.items():
        src = area(mod)
        if src is None:                                   # meanfield/__init__: re-exports
            continue
        for e in edges:
            dst = area(e.target)
            if src in ROOMS and dst in ROOMS and ROOMS.index(dst) > ROOMS.index(src):
                out["room order"].append(e)
            if src in NO_DYNAMICS and dst == "dynamics":
                out["pde/diagnostics import dynamics"].append(e)
            if src == "models" and dst == "interact":
                out["models import interact"].append(e)
            if src in BASE and dst in TOP:
                out["base imports top"].append(e)
            if src in LEAF:
                out["errors is a leaf"].append(e)
            if src in NO_EXPERIMENTS and dst in RUN_MACHINERY:
                out["analysis/figures import experiments"].append(e)
            if mod in experiments and e.target in experiments and e.target != mod:
                out["experiments import each other"].append(e)
    return out


def _report(edges) -> str:
    return "\n  ".join(str(e) for e in edges)


# ---------------------------------------------------------------------------------------
# the checker on planted faults (each check can fail)
# ---------------------------------------------------------------------------------------

_PLANTED = {
    "meanfield": ("__version__ = '0'\nfrom .errors import ConfigError\nfrom .models import Unit\n",
                  True),
    "meanfield.errors": ("", False),
    "meanfield.measure": ("from . import measure\n", False),                     # itself
    "meanfield.models": ("from .tasks import Task\n", True),
    "meanfield.models.tasks": ("from ..errors import ConfigError\n\n\ndef risk():\n"
                               "    from ..interact import get_backend\n", False),  # line 5
    "meanfield.models.units": ("from .. import measure\n", False),
    "meanfield.interact": ("from ..models.tasks import Task\nfrom . import tiled\n", True),
    "meanfield.interact.tiled": ("from . import base\n", False),
    "meanfield.interact.base": ("import meanfield.models.units as u\n", False),
    "meanfield.dynamics": ("from .. import io\nfrom ..interact import evaluate\n", True),
    "meanfield.io": ("from . import __version__\nimport meanfield.dynamics.x\n", False),
    "meanfield.pde": ("from ..dynamics import ParticleState\n", True),
    "meanfield.diagnostics": ("from meanfield import dynamics\n", False),
    "meanfield.experiments": ("from .. import io\nfrom ..dynamics import *\n", True),
    "meanfield.cli": ("from .experiments import get\n", False),
    # a registry that imports by computed name, and a runner that re-enters it (a cycle)
    "meanfield.app": ("import importlib\n\n\ndef get(n):\n"
                      "    return importlib.import_module(f'.{n}', __name__)\n", True),
    "meanfield.reg": ("from importlib import import_module\nTABLE = {'a': 'x', 'b': 'y'}\n"
                      "import_module(f'.{TABLE[k]}', __name__)\n", True),
    "meanfield.reg.x": ("", False), "meanfield.reg.y": ("", False), "meanfield.reg.z": ("", False),
    "meanfield.app.one": ("from .runner import run\n", False),
    "meanfield.app.runner": ("from meanfield import app\n"
                             "from importlib import import_module as im\n"
                             "im('.one', __package__)\nim('meanfield.errors')\n", False),
}


def test_checker_resolves_imports_as_documented():
    g = import_graph(_PLANTED)
    targets = {m: sorted({e.target for e in es}) for m, es in g.items()}
    assert targets["meanfield.dynamics"] == ["meanfield.interact", "meanfield.io"]
    assert targets["meanfield.io"] == ["meanfield", "meanfield.dynamics"]   # __version__; prefix
    assert targets["meanfield.models.units"] == ["meanfield.measure"]
    assert targets["meanfield.interact"] == ["meanfield.interact.tiled", "meanfield.models.tasks"]
    assert targets["meanfield.interact.base"] == ["meanfield.models.units"]
    assert targets["meanfield.diagnostics"] == ["meanfield.dynamics"]      # submodule by name
    assert targets["meanfield.experiments"] == ["meanfield.dynamics", "meanfield.io"]
    assert targets["meanfield.app"] == ["meanfield.app.one", "meanfield.app.runner"]
    assert targets["meanfield.reg"] == ["meanfield.reg.x", "meanfield.reg.y"]      # not .z
    assert targets["meanfield.app.runner"] == ["meanfield.app", "meanfield.app.one",
                                               "meanfield.errors"]
    (e,) = [e for e in g["meanfield.models.tasks"] if e.target == "meanfield.interact"]
    assert e.line == 5 and "get_backend" in e.statement                    # inside a function


def test_checker_finds_planted_cycles_and_violations():
    g = import_graph(_PLANTED)
    assert find_cycles(g) == [["meanfield.app", "meanfield.app.one", "meanfield.app.runner"],
                              ["meanfield.dynamics", "meanfield.io"],
                              ["meanfield.interact", "meanfield.models.tasks"],
                              ["meanfield.measure"]]
    v = {rule: sorted((e.importer, e.target) for e in es)
         for rule, es in rule_violations(g).items()}
    loop = shortest_loop(g, ["meanfield.interact", "meanfield.models.tasks"])
    assert [(e.importer, e.target, e.line) for e in loop] == [
        ("meanfield.interact", "meanfield.models.tasks", 1),
        ("meanfield.models.tasks", "meanfield.interact", 5)]
    assert "e.g. meanfield.measure -> meanfield.measure" in describe_cycle(g, ["meanfield.measure"])
    assert v["room order"] == [("meanfield.models.tasks", "meanfield.interact")]
    assert v["models import interact"] == [("meanfield.models.tasks", "meanfield.interact")]
    assert v["pde/diagnostics import dynamics"] == [("meanfield.diagnostics", "meanfield.dynamics"),
                                                    ("meanfield.pde", "meanfield.dynamics")]
    assert v["base imports top"] == [("meanfield.dynamics", "meanfield.io")]
    assert v["errors is a leaf"] == []
    g2 = import_graph({**_PLANTED, "meanfield.errors": ("from .measure import M\n", False)})
    assert [(e.importer, e.target) for e in rule_violations(g2)["errors is a leaf"]] == [
        ("meanfield.errors", "meanfield.measure")]
    clean = {m: (s, p) for m, (s, p) in _PLANTED.items()
             if m not in ("meanfield.models.tasks", "meanfield.io", "meanfield.measure")
             and not m.startswith("meanfield.app")}
    g3 = import_graph({**clean, "meanfield.models.tasks": ("from ..errors import E\n", False),
                       "meanfield.measure": ("", False), "meanfield.io": ("", False)})
    assert find_cycles(g3) == [] and not any(rule_violations(g3)["room order"])


# ---------------------------------------------------------------------------------------
# the package
# ---------------------------------------------------------------------------------------


def test_checker_finds_planted_experiment_and_private_imports():
    planted = {
        "meanfield": ("", True), "meanfield.errors": ("", False),
        "meanfield.experiments": ("EXPERIMENTS = {'a-b': 'ab', 'c': 'cc'}\n", True),
        "meanfield.experiments.ab": ("from .cc import plan\nfrom .shared import make\n", False),
        "meanfield.experiments.cc": ("from ..analysis.rates import _fit\n", False),
        "meanfield.experiments.shared": ("from . import cc\n", False),
        "meanfield.analysis": ("", True),
        "meanfield.analysis.rates": ("from ..experiments import cc\n", False),
        "meanfield.analysis.x": ("from .rates import _shared\n", False),
        "meanfield.figures": ("", True),
        "meanfield.figures.f": ("from .. import runner\nfrom ..analysis import rates\n", False),
        "meanfield.runner": ("", False),
    }
    sources = {m: (s, p, m.replace(".", "/") + ".py") for m, (s, p) in planted.items()}
    g = import_graph({m: (s, p) for m, (s, p) in planted.items()})
    regs = registered_experiments(sources)
    assert regs == {"meanfield.experiments.ab", "meanfield.experiments.cc"}
    v = {rule: sorted((e.importer, e.target) for e in es)
         for rule, es in rule_violations(g, regs).items()}
    assert v["experiments import each other"] == [("meanfield.experiments.ab", "meanfield.experiments.cc")]
    assert v["analysis/figures import experiments"] == [
        ("meanfield.analysis.rates", "meanfield.experiments.cc"), ("meanfield.figures.f", "meanfield.runner")]
    (bad,) = private_imports(sources)
    assert "imports _fit from meanfield.analysis.rates" in bad


@pytest.fixture(scope="module")
def sources():
    return package_sources()


@pytest.fixture(scope="module")
def graph(sources):
    assert {"meanfield", "meanfield.errors", "meanfield.measure", "meanfield.models",
            "meanfield.interact", "meanfield.dynamics"} <= set(sources)
    return import_graph(sources)


def test_every_room_of_the_design_exists(graph):
    areas = {area(m) for m in graph}
    design = {"pde", "diagnostics", "experiments", "io", "plotting", "cli", "errors"}
    assert set(ROOMS) | design <= areas


def test_no_import_cycles(graph):
    comps = find_cycles(graph)
    msg = "\n".join(describe_cycle(graph, c) for c in comps)
    assert not comps, "import cycles among meanfield's modules:\n" + msg


@pytest.mark.parametrize("rule", ["room order", "pde/diagnostics import dynamics",
                                  "models import interact", "base imports top",
                                  "errors is a leaf", "analysis/figures import experiments",
                                  "experiments import each other"])
def test_room_rules(sources, graph, rule):
    bad = rule_violations(graph, registered_experiments(sources))[rule]
    assert not bad, f"docs/design.md §2 rule '{rule}' broken by:\n  " + _report(bad)


def test_no_module_imports_another_modules_private_names(sources):
    bad = private_imports(sources)
    assert not bad, "underscore-private names imported from another module:\n  " + "\n  ".join(bad)
