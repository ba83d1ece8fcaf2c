# The two commands a new user needs:
#   make train   install if needed, train MoDE on the default task, then evaluate it with rollouts
#   make test    install if needed, run the test suite
# Both are idempotent: the install step re-runs only when pyproject.toml changes.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TRAIN_ARGS ?=
EVAL_EPISODES ?= 50

LIBERO_VENV  ?= .venv-libero
LIBERO_STAMP := $(LIBERO_VENV)/.installed

.PHONY: install libero-env train test lint bench clean-venv

$(PY):
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)

# torch goes first, pinned to the CPU build: anything that pulls torch in unpinned would fetch a
# multi-GB CUDA build instead.
$(STAMP): pyproject.toml | $(PY)
	@bash scripts/ensure_headless_gl.sh
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# The LIBERO simulator in its own environment (robosuite 1.4 cannot live beside the main env's 1.5),
# every package pinned in envs/libero_requirements.txt; envs/libero_env.py runs its workers under it.
$(LIBERO_STAMP): envs/libero_requirements.txt
	python3.11 -m venv $(LIBERO_VENV) || python3 -m venv $(LIBERO_VENV)
	$(LIBERO_VENV)/bin/python -m pip install -q --upgrade pip
	$(LIBERO_VENV)/bin/python -m pip install -q -r envs/libero_requirements.txt
	$(LIBERO_VENV)/bin/python -m pip check
	@touch $(LIBERO_STAMP)

libero-env: $(LIBERO_STAMP)

train: install
	$(PY) train.py policy=mode $(TRAIN_ARGS)
	$(PY) eval_rollouts.py checkpoint=latest n_episodes=$(EVAL_EPISODES) workers=2 video.n=4

test: install libero-env
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .

bench: install
	$(PY) benchmarks/data_throughput.py --quick

clean-venv:
	rm -rf $(VENV)
