#!/usr/bin/env bash
# Create .venv/ at the repository root and install meanfield (editable) with its dev, notebooks
# and docs extras.
#
# torch: on a machine without an NVIDIA GPU we install a CPU build *before* the project,
# so that the project's `torch>=2.1` is already satisfied and pip never resolves the
# multi-GB CUDA wheel from PyPI.  Preference order on CPU machines:
#   1. a local CPU wheel reachable through pip's configured --find-links (no download);
#   2. the official CPU index (https://download.pytorch.org/whl/cpu).
# With a GPU (nvidia-smi answers), pip resolves the default (CUDA) torch as usual.
# MEANFIELD_TORCH="pip requirement" overrides the choice entirely.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${MEANFIELD_TORCH:-}" ]; then
    "${PIP[@]}" install "$MEANFIELD_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the default (CUDA) torch" >&2
    "${PIP[@]}" install torch
  elif "${PIP[@]}" install --no-index --no-deps torch 2>/dev/null \
       && "$VENV/bin/python" -c "import sys, importlib.metadata as m; sys.exit('+cpu' not in m.version('torch'))" 2>/dev/null; then
    echo "setup: no GPU, installed the local CPU torch wheel" >&2
  else
    echo "setup: no GPU, installing torch from the PyTorch CPU index" >&2
    "${PIP[@]}" uninstall -y torch >/dev/null 2>&1 || true
    "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple
  fi
fi
# Editable install; resolves torch's own dependencies (filelock, sympy, ...) too. The tests
# execute the notebooks through a Jupyter kernel and build the documentation site, so the
# notebooks and docs extras come with dev (about 20 s more on a fresh machine).
"${PIP[@]}" install -e ".[dev,notebooks,docs]"
"$VENV/bin/python" -c "import meanfield, torch; print('setup: meanfield', meanfield.__version__, '| torch', torch.__version__)"
