# Two commands for a fresh machine (see README):
#   make demo   set up .venv/ and run the main job (teacher-student, population GD)
#   make test   set up .venv/ and run the test suite
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meanfield-installed
# KeOps compiles formulas on first use: keep them in a writable per-project cache.
export KEOPS_CACHE_FOLDER ?= $(CURDIR)/.cache/keops

.PHONY: setup demo test gallery clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

demo: setup
	rm -rf runs/demo
	$(VENV)/bin/meanfield run teacher-student --out runs/demo

test: setup
	$(PY) -m pytest -q

# regenerate docs/gallery/*.png (the README's figures) by running each reproduction (long)
gallery: setup
	bash scripts/gallery.sh

clean:
	rm -rf $(VENV) .cache runs build *.egg-info
