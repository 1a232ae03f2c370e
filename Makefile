# tem-book: two commands for users (see README.md)
#   make book   create .venv if missing, install, execute every notebook with papermill, build the HTML book
#   make test   same install, then the test suite (notebooks run by papermill in quick mode)
# and for developers: make lab, make sweep, make bench, make lint, make clean

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_VERSION := 2.13.0
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# torch's OpenMP spin-waiting starves Taichi's CPU threads on 2-core machines
export OMP_WAIT_POLICY := PASSIVE

.PHONY: book test lab sweep bench lint notebooks compare-env clean distclean

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) (once; about 2 minutes with pip's cache filled, ~1.8 GB on disk)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "==> installing torch==$(TORCH_VERSION) (the largest download, ~750 MB installed)"
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	@echo "==> installing tem_core and the book and test tools (taichi, jupyter-book, ...)"
	$(PY) -m pip install --quiet -e '.[book,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tem-book)" >/dev/null
	@echo "==> $(VENV) ready"
	touch $(STAMP)

notebooks: $(STAMP)
	$(PY) book/run_notebooks.py --notebooks notebooks --out book/chapters

book: notebooks
	$(VENV)/bin/jupyter-book build book --config _config.yml --path-output book --warningiserror --keep-going
	@echo "Book built: $(CURDIR)/book/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest

# jupytext's server extension is enabled by its pip install; jupyter-config/ makes .py
# chapters open as notebooks on double-click (see jupyter-config/README.md)
lab: $(STAMP)
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter-config$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
		$(VENV)/bin/jupyter lab --allow-root notebooks

# A documented parameter sweep: chapter 02 at four doses (quick size), one notebook per
# dose in runs/ (see book/run_notebooks.py; any -p/--grid works the same way)
sweep: $(STAMP)
	$(PY) book/run_notebooks.py 02_imaging --quick --grid dose_e_per_a2=10,20,40,80

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --quick

# Peers (abTEM, focal-frequency-loss) live in their own environment, used only by benchmarks/.
compare-env: .venv-compare/.installed
.venv-compare/.installed: pyproject.toml
	test -x .venv-compare/bin/python || $(PYTHON) -m venv .venv-compare
	.venv-compare/bin/python -m pip install --quiet torch==$(TORCH_VERSION)
	.venv-compare/bin/python -m pip install --quiet -e '.[compare]'
	# Topaz-Denoise (benchmarks/denoise.py): without its dependencies, which would pull
	# torchvision and may replace torch; its U-Net needs only torch and numpy
	.venv-compare/bin/python -m pip install --quiet --no-deps topaz-em==0.3.20
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check tem_core tests benchmarks notebooks book/run_notebooks.py

clean:
	rm -rf book/_build book/chapters runs .pytest_cache

distclean: clean
	rm -rf $(VENV)
