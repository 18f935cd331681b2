# Two commands for a fresh machine (see README):
#   make demo   set up .venv/ and run the main job (teacher-student, population GD)
#   make test   set up .venv/ and run the test suite
#   make docs   build the documentation site into docs/_build/html
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.meanfield-installed
# KeOps compiles formulas on first use: keep them in a writable per-project cache.
export KEOPS_CACHE_FOLDER ?= $(CURDIR)/.cache/keops

.PHONY: setup demo test gallery notebooks docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh
	touch $@

demo: setup
	rm -rf runs/demo
	$(VENV)/bin/meanfield run teacher-student --out runs/demo

# two pytest-xdist workers (the CI machine has 2 cores), one test file per worker at a time;
# `make test PYTEST_WORKERS=0` runs serially
PYTEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadfile)

# regenerate docs/gallery/*.png (the README's figures) by running each reproduction (long)
gallery: setup
	bash scripts/gallery.sh

# execute every notebook through a Jupyter kernel (figures inline) into notebooks/_out/NN_*.ipynb;
# `make notebooks SMALL=1` for the small mode (seconds), NB=01 for one notebook
notebooks: setup
	$(PY) scripts/notebooks.py --jobs 2 $(if $(SMALL),--small) $(NB)

# the documentation site, warnings as errors, into docs/_build/html
# (python -m http.server -d docs/_build/html); notebooks run in small mode, cached in .cache/
docs: setup
	$(PY) scripts/build_docs.py

clean:
	rm -rf $(VENV) .cache runs build *.egg-info docs/_build
