# Two commands on a fresh machine:
#   make run    set up (.venv, the kit, the dataset) and run the main job: the notebook pipeline, quick profile
#   make test   set up (also Debian's chromium, for the browser test) and run the test suite
# Also: make lab (JupyterLab on notebooks/), make test-browser (the browser test alone), make bench, make test-gpu.
# Set-up steps are skipped when already done (the venv is stamped; the dataset check is a file test).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kit-installed
FASHION_SYSTEM := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
FASHION_LOCAL  := data/fashion-mnist/train-images-idx3-ubyte.gz
PROFILE ?= quick
DATASET ?= fashion-mnist
RUN     ?= results/$(PROFILE)-$(DATASET)

.PHONY: setup data browser run test test-browser test-gpu bench lab clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

# Fashion-MNIST, the embedded default: Debian's package (installed here when root), or the four .gz files in data/fashion-mnist/.
data:
	@if [ -f $(FASHION_LOCAL) ] || [ -f $(FASHION_SYSTEM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's dataset-fashion-mnist …"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or put the four standard .gz files in data/fashion-mnist/."; \
	  exit 1; \
	fi

# Debian's chromium for the end-to-end browser test (Playwright drives it; no browser download). Installed here when
# root; elsewhere the test is skipped with the reason, except under `make test-browser` and CI, where it fails.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's chromium for the browser test …"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	  echo "note: /usr/bin/chromium is missing, so the browser test will be skipped; 'sudo apt-get install chromium' adds it."; \
	fi

run: setup
	$(PY) -m kit pipeline --profile $(PROFILE) --dataset $(DATASET) --out $(RUN)

test: setup browser
	$(PY) -m pytest -q

# The end-to-end test alone: JupyterLab + notebook 06 + the γ slider in Debian's chromium (screenshots: results/browser/).
test-browser: setup browser
	KIT_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m browser -s

# On a machine with a CUDA GPU: the GPU-marked tests, then the whole pipeline on the smoke profile on the GPU.
test-gpu: setup
	$(PY) -m pytest -q -m gpu
	$(PY) -m kit pipeline --profile smoke --dataset $(DATASET) --device cuda --out results/smoke-gpu

bench: setup
	$(PY) -m kit bench prior
	$(PY) -m kit bench permute
	$(PY) -m kit bench inr
	$(PY) -m kit bench prefit
	$(PY) -m kit bench blockwise
	$(PY) -m kit bench explorer

# JupyterLab in the project's environment, on notebooks/ (the kit's kernel; the γ explorer is notebook 06).
lab: setup
	$(PY) -m kit lab

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
