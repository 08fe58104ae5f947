# fcpts-kit: `make setup`, `make demo`, `make test`, `make lab`, `make notebooks`, `make sync`, `make clean`,
# `make reproduce DATA=/path/to/imagenet`.
#
# Which Python: if a virtual environment or conda env is active (VIRTUAL_ENV / CONDA_PREFIX set), use its
# python and install the kit into it only when `import fcpts` fails there. Otherwise create .venv/ inside
# the repository and install into it; the stamp .venv/.installed makes the install rerun only when
# pyproject.toml changes. pip uses whatever index/mirror configuration the machine already has.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?= -q
ACTIVE_ENV := $(or $(VIRTUAL_ENV),$(CONDA_PREFIX))

ifeq ($(ACTIVE_ENV),)
PY := $(CURDIR)/$(VENV)/bin/python
SETUP_TARGET := $(VENV)/.installed
else
PY := $(firstword $(wildcard $(ACTIVE_ENV)/bin/python) $(PYTHON))
SETUP_TARGET := install-active
endif

.PHONY: setup demo test lab notebooks sync clean install-active git-filter reproduce

setup: $(SETUP_TARGET) git-filter

$(VENV)/.installed: pyproject.toml
	@test -x "$(VENV)/bin/python" || $(PYTHON) -m venv "$(VENV)"
	"$(VENV)/bin/python" -m pip install -q -e ".[dev]"
	@touch "$@"

# Run the import check from / so that the repository checkout on sys.path cannot fake an installed package.
install-active:
	@cd / && "$(PY)" -c "import fcpts, pytest, jupytext, nbstripout, jupyterlab, playwright" 2>/dev/null || \
		(cd "$(CURDIR)" && "$(PY)" -m pip install -q -e ".[dev]")

# nbstripout as a git filter on *.ipynb (in .git/, so only inside a checkout): executed notebooks, a
# student's JupyterLab autosaves included, never show as changes or conflict on `git pull`.
# language_info is stripped too: JupyterLab fills in the kernel's Python version, which differs between machines.
NBSTRIPOUT_EXTRA_KEYS := metadata.language_info
git-filter: $(SETUP_TARGET)
	@if [ "$$(git rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
		{ "$(PY)" -m nbstripout --is-installed 2>/dev/null || "$(PY)" -m nbstripout --install; } && \
		git config filter.nbstripout.extrakeys "$(NBSTRIPOUT_EXTRA_KEYS)"; fi

demo: setup
	"$(PY)" -m fcpts demo

# The paper's grid (params/paper.yaml) on ImageNet and every visible GPU: plan and estimate first, then the runs
# (resumable: run it again after an interruption), then results/reproduce/report.md. REPRODUCE_ARGS=--plan-only etc.
DATA ?=
REPRODUCE_ARGS ?=
reproduce: setup
	@test -n "$(DATA)" || { echo "make reproduce needs DATA=/path/to/imagenet (a folder with train/ and val/)"; exit 2; }
	"$(PY)" -m fcpts reproduce --data "$(DATA)" $(REPRODUCE_ARGS)

# ----- tutorial notebooks (notebooks/0[1-4]_*.ipynb, stored without outputs) -----
# Each runs through papermill in one mode (params/<mode>.yaml) into $(NB_OUT)/<mode>/ (never in place); the checkout's
# fcpts goes first on the kernels' path, as pytest's `pythonpath`. The first notebook that needs the embedded
# dense ResNet-50 trains and caches it in data/checkpoints/ (about 2.5 min on 2 cores, once).
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
NB_OUT ?= build/notebooks
NB_ENV := PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}"

# $(call run-notebooks,MODE,OUT_DIR): papermill over every notebook in that mode, timed.
define run-notebooks
	@mkdir -p "$(2)"
	@set -e; for nb in $(NOTEBOOKS); do \
		start=$$(date +%s); \
		$(NB_ENV) "$(PY)" -m papermill "$$nb" "$(2)/$$(basename $$nb)" -p mode "$(1)" --cwd notebooks \
			--no-progress-bar --log-level WARNING; \
		echo "[notebooks] papermill $$(basename $$nb) ($(1)): $$(( $$(date +%s) - start )) s"; \
	done
endef

# Everything `make test` runs is this one block (CI runs `make test` via .ci/run): the unit tests, then every
# notebook in mode ci (params/ci.yaml), then nbval re-executes the executed copies and compares the summary cells
# tagged `nbval-check-output` (--nbval-lax: only those) with what papermill stored.
test: setup
	"$(PY)" -m pytest $(PYTEST_ARGS)
	rm -rf "$(NB_OUT)/ci"
	$(call run-notebooks,ci,$(NB_OUT)/ci)
	rm -rf "$(NB_OUT)/ci/results" "$(NB_OUT)/ci/figures"  # nbval replays the notebooks from papermill's start
	@set -e; for nb in $(NB_OUT)/ci/*.ipynb; do \
		start=$$(date +%s); \
		$(NB_ENV) "$(PY)" -m pytest $(PYTEST_ARGS) -p no:cacheprovider --nbval-lax --nbval-current-env "$$nb"; \
		echo "[notebooks] nbval $$(basename $$nb): $$(( $$(date +%s) - start )) s"; \
	done

# JupyterLab on notebooks/, with this environment registered as the kernel "fcpts-kit" (so a system-wide
# JupyterLab finds it too). Jupytext saves each notebook and its .py pair together. LAB_ARGS=--no-browser etc.
# The save hook refreshes git's index entry of a notebook saved with new outputs only (see its docstring).
# params/jupyterlab.json goes into this environment's JupyterLab overrides (overrides.d/fcpts-kit.json): no news
# prompt and no update check over the notebook. JupyterLab opens on LAB_OPEN.
LAB_HOOK := --FileContentsManager.post_save_hook=fcpts.notebook.refresh_git_after_save
LAB_PORT ?= 8888
LAB_ARGS ?=
LAB_OPEN ?= 01_theory_bridge_function.ipynb
lab: setup
	"$(PY)" -m ipykernel install --user --name fcpts-kit --display-name "Python (fcpts-kit)"
	@overrides="$$("$(PY)" -c "import os; from jupyterlab.commands import get_app_dir; print(os.path.join(get_app_dir(), 'settings', 'overrides.d'))")" && \
		mkdir -p "$$overrides" && cp params/jupyterlab.json "$$overrides/fcpts-kit.json"
	$(NB_ENV) "$(PY)" -m jupyterlab --ServerApp.root_dir="$(CURDIR)/notebooks" --port=$(LAB_PORT) $(LAB_HOOK) \
		--LabApp.default_url=/lab/tree/$(LAB_OPEN) --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# After editing a notebook's .py source by hand: rewrite its .ipynb (jupytext), in nbstripout's stored form.
sync: setup
	"$(PY)" -m jupytext --sync notebooks/[0-9][0-9]_*.py
	"$(PY)" -m nbstripout --extra-keys "$(NBSTRIPOUT_EXTRA_KEYS)" notebooks/[0-9][0-9]_*.ipynb

# The quick CPU mode (the notebooks' defaults, writing to the committed folders): refreshes the result files
# in data/ and every figure in figures/.
notebooks: setup
	$(call run-notebooks,refresh,$(NB_OUT)/refresh)

# Build outputs and caches only; never data/ (datasets, checkpoints) or results/.
clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . \( -path "./$(VENV)" -o -path ./data -o -path ./.git \) -prune -o \
		\( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print0 | xargs -0 rm -rf
