"""Sphinx configuration of the documentation site (``make docs``; see scripts/build_docs.py).

Sphinx + MyST-NB + Furo, the toolchain of the field's libraries (POT, geomloss, ott-jax):
autodoc reads the docstrings as written (reStructuredText with unicode maths; napoleon for the
few numpy-style ``Parameters`` sections), MyST reads the Markdown the repository already keeps,
and MyST-NB renders the notebooks executed once (by the tests or scripts/build_docs.py) with
their outputs — it never executes them itself.
"""
import inspect
import os
import re
import unicodedata
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")

import meanfield  # noqa: E402

project = "meanfield"
author = "the meanfield authors"
copyright = "2026, the meanfield authors"
release = version = meanfield.__version__

# MathJax is served from the site: MathJax 3 as packaged by sphinx-mathjax-offline is copied
# into _static (see setup below; that package's own extension does not declare itself safe
# for parallel reading), so formulas render with no network at read time
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax"]
mathjax_path = "mathjax/tex-chtml.js"
exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# MyST: heading anchors so that links like guide/pde.md#section resolve; <img> tags of the README
# become image nodes (their files are copied into the site)
myst_enable_extensions = ["html_image", "dollarmath"]
myst_heading_anchors = 3

# MyST-NB: the notebooks arrive executed; show stdout and figures, hide stderr (progress bars,
# library warnings), merge the print streams of a cell into one block
nb_execution_mode = "off"
nb_output_stderr = "remove"
nb_merge_streams = True

# autodoc: signatures as written, members in source order. External types (torch.Tensor, …)
# are not cross-referenced: nitpicky stays off, so a type annotation never warns; broken links
# between pages still do. The docstrings are read through _plain_text_safe (below).
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# docstrings write ``code`` and :func:`name`; a bare `x` is shown as code, not as a citation
default_role = "code"

html_theme = "furo"
html_title = f"meanfield {release}"
html_static_path = []
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}


def _warn_missing_docstring(app, what, name, obj, options, lines):
    """A public object without a docstring is a warning (an error under ``-W``)."""
    if what in ("function", "class", "method", "property", "module") and not "".join(lines).strip():
        if not name.rsplit(".", 1)[-1].startswith("_") and inspect.getdoc(obj) is None:
            from sphinx.util import logging

            logging.getLogger(__name__).warning(f"{name}: public {what} without a docstring")


# ---- the docstrings as reStructuredText -------------------------------------------------------
# They are written for `help()` first: reStructuredText inline markup (``code``, :func:`x`,
# **bold**, *emphasis*, "- " and "* " lists, "::" blocks) inside free text with unicode maths,
# where |w|, a*b and a formula indented under its sentence mean what they say. This
# rewrite keeps the markup and makes the rest literal, so that no docstring needs changing:
# - "|" is always a character (never a substitution), "*" too unless it opens or closes a
#   well-formed **strong** or *emphasis* span;
# - a line indented under a paragraph becomes a block quote (the formula under its sentence),
#   a paragraph that resumes after it starts anew, and a list may follow its "…:" line
#   directly (blank lines inserted where RST wants them); ``x``² gets its escaped space;
# - a formula written with TeX sub- or superscripts in braces (‖v‖²_{L²(ρ_N)}, e^{−μt/ξ},
#   P_{l+1}) becomes a :math: span, which MathJax renders (help() keeps showing the text);
# - a numpy-style "Parameters / ----------" section whose entries are "name : description"
#   becomes a rubric and a definition list.
_LITERAL = re.compile(r"(``.+?``|:[\w:+-]+:`[^`]+`|`[^`]+`_{0,2})")
_STRONG = re.compile(r"(?<![\w\\*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])")
_EMPH = re.compile(r"(?<![\w\\*])\*(?=[^\s*])([^*]+?)(?<=[^\s*])\*(?![\w*])")
_BULLET = re.compile(r"^\s*[-*•] ")
_OPENER = re.compile(r"^\s*(?:[-*+•] |\d+[.)] |\.\. |:[\w ]+:|>>>)")


def _escape_text(seg: str) -> str:
    """Escape "|" and the stray "*" of a piece of text outside inline literals and roles."""
    keep = {}

    def hold(m):
        keep[f"\0{len(keep)}\0"] = m.group(0)
        return f"\0{len(keep) - 1}\0"

    seg = _EMPH.sub(hold, _STRONG.sub(hold, seg))
    seg = seg.replace("|", "\\|").replace("*", "\\*")
    for k, v in keep.items():
        seg = seg.replace(k, v)
    return seg


_CLOSE = {")": "(", "]": "[", "}": "{"}


def _formula_tokens(text: str):
    """(start, end) of every run of non-space characters that holds a TeX sub- or superscript
    in braces (``_{…}``/``^{…}``; spaces allowed inside brackets opened after it)."""
    spans, i = [], 0
    while True:
        m = re.search(r"[_^]\{", text[i:])
        if not m:
            return spans
        at = i + m.start()
        start = at
        while start > 0 and not text[start - 1].isspace() and text[start - 1] != "`":
            start -= 1
        end, depth = at, 0                 # brackets opened inside the formula may hold spaces
        while end < len(text) and text[end] != "`" and not (text[end].isspace() and depth <= 0):
            depth += (text[end] in "{[(") - (text[end] in "}])")
            end += 1
        if depth > 0:                      # never closed: the formula is the run without spaces
            end = at
            while end < len(text) and not text[end].isspace() and text[end] != "`":
                end += 1
        spans.append((start, end))
        i = max(end, at + 2)


def _formula_span(token: str) -> str:
    """``token`` (a run of non-space characters holding ``_{`` or ``^{``) as a :math: role,
    with the punctuation around it left outside: a trailing ``.,;:`` and closing brackets
    that the token does not open, and opening brackets that it does not close."""
    lead, trail = "", ""
    while token and (token[-1] in ".,;:" or (token[-1] in _CLOSE and
                                            token.count(token[-1]) > token.count(_CLOSE[token[-1]]))):
        trail, token = token[-1] + trail, token[:-1]
    while token and token[0] in "([" and token.count(token[0]) > token.count({"(": ")", "[": "]"}[token[0]]):
        lead, token = lead + token[0], token[1:]
    if token.count("{") != token.count("}") or not token:
        return lead + token + trail
    return f"{lead}:math:`{token}`{trail}"


def _math_spans(text: str) -> str:
    """Every formula token of ``text`` outside inline literals and roles as a :math: span."""
    parts = _LITERAL.split(text)
    out = []
    for i, p in enumerate(parts):
        if i % 2 == 0:
            pieces, last = [], 0
            for a, b in _formula_tokens(p):
                pieces += [p[last:a], _formula_span(p[a:b])]
                last = b
            p = "".join(pieces) + p[last:]
        out.append(p)
    return "".join(out)


def _escape_line(line: str) -> str:
    bullet = re.match(r"^(\s*\* )", line)
    head, rest = (bullet.group(1), line[bullet.end():]) if bullet else ("", line)
    rest = _math_spans(rest)
    parts = _LITERAL.split(rest)
    out = [p if i % 2 else _escape_text(p) for i, p in enumerate(parts)]
    for i in range(1, len(out), 2):        # ``x``² : markup must touch space or punctuation
        if out[i - 1] and not _delimits(out[i - 1][-1]):
            out[i - 1] += "\\ "
        if out[i + 1] and not _delimits(out[i + 1][0]):
            out[i + 1] = "\\ " + out[i + 1]
    return head + "".join(out)


def _delimits(c: str) -> bool:
    return c.isspace() or unicodedata.category(c).startswith("P")


def _parameters(lines):
    """numpy-style "Parameters" sections of "name : description" entries → rubric + definitions."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "Parameters" and i + 1 < len(lines) \
                and set(lines[i + 1].strip()) == {"-"}:
            out += [".. rubric:: Parameters", ""]
            i += 2
            while i < len(lines) and lines[i].strip():
                m = re.match(r"^(\S[^:]*?)\s+:\s+(.*)$", lines[i])
                if m:
                    out += [f"``{m.group(1)}``", "    " + m.group(2)]
                else:
                    out.append("    " + lines[i].strip())
                i += 1
            out.append("")
        else:
            out.append(lines[i])
            i += 1
    return out


def _indent(s: str) -> int:
    return len(s) - len(s.lstrip())


def _plain_text_safe(app, what, name, obj, options, lines):
    """autodoc-process-docstring: rewrite ``lines`` in place (see the comment above); the
    "Alias for field number k" that namedtuple gives each field is dropped (the class says it)."""
    if re.fullmatch(r"Alias for field number \d+", " ".join(lines).strip()):
        lines[:] = []
        return
    src, out = _parameters(list(lines)), []
    literal_at = None          # the indentation of the "::" line whose literal block we are in
    prev = None                # the previous line, when it was not blank
    for line in src:
        if not line.strip():
            out.append(line)
            prev = None
            continue
        ind = _indent(line)
        if literal_at is not None and ind > literal_at:
            out.append(line)                                     # inside a literal block
            prev = line
            continue
        literal_at = None
        if prev is not None and (ind < _indent(prev) or
                                 (_BULLET.match(line) and prev.rstrip().endswith(":")) or
                                 (ind > _indent(prev) and not _OPENER.match(prev)
                                  and not prev.rstrip().endswith("::"))):
            out.append("")
        if prev is not None and ind > _indent(prev) and prev.rstrip().endswith("::"):
            literal_at = _indent(prev)
            out.append(line)
            prev = line
            continue
        out.append(_escape_line(line))
        if line.rstrip().endswith("::"):
            literal_at = ind
        prev = line
    lines[:] = out


def _copy_mathjax(app, exc):
    """build-finished: MathJax 3 (from the sphinx-mathjax-offline package) into _static/mathjax."""
    import importlib.util

    from sphinx.util.fileutil import copy_asset

    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if exc is None and spec is not None:
        copy_asset(str(Path(spec.origin).parent / "static" / "mathjax"),
                   str(Path(app.outdir) / "_static" / "mathjax"))


def setup(app):
    """Register the docstring rewrite, the missing-docstring check and the MathJax copy."""
    app.connect("build-finished", _copy_mathjax)
    app.connect("autodoc-process-docstring", _plain_text_safe)
    app.connect("autodoc-process-docstring", _warn_missing_docstring)
