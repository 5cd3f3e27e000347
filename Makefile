# Two commands on a fresh machine:
#   make demo   install everything into .venv and run the main job (recipes/lao_sto_quick.yaml)
#   make test   install everything (with the abTEM reference) and run the test suite
# and the documentation site (executes the tutorials; output in site/):
#   make docs   install the docs tools (inverscope[docs]) and build with warnings as errors
PY ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip install -q -c constraints.txt

.PHONY: install install-test install-docs demo test docs bench bench-gpu clean

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(PIP) -e .

install-test: $(VENV)/bin/python
	$(PIP) -e ".[test]"

install-docs: $(VENV)/bin/python
	$(PIP) -e ".[docs]"

demo: install
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/inverscope run recipes/lao_sto_quick.yaml --out out/lao_sto_quick

test: install-test
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python -m pytest -q

# mkdocs.yml: strict, every internal link and anchor checked; tutorials executed (docs/hooks.py)
docs: install-docs
	NO_MKDOCS_2_WARNING=1 OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/mkdocs build --strict

bench: install-test
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python benchmarks/multislice_vs_abtem.py --json benchmarks/results/multislice_vs_abtem.json

# one CUDA device, <= 8 min: multislice, campaign, training and inference throughput in one JSON
bench-gpu: install-test
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/python benchmarks/gpu_suite.py --out benchmarks/results/gpu_suite.json

clean:
	rm -rf out .pytest_cache site
