# opclaim: `make demo` runs the whole study on a CPU; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# CPU build from this machine's disk. GPU users: install your CUDA torch into .venv first
# (`python3 -m venv .venv && .venv/bin/pip install torch --index-url <your CUDA wheel index>`);
# setup keeps any torch that is already there.
TORCH_SPEC ?= torch==2.13.0
# Debian packages per target: the demo needs only WordNet (METEOR); the tests also need a SLURM
# cluster, a browser and a database server.
DEB_DEMO := wordnet-base wordnet-sense-index
DEB_TEST := slurm-wlm munge chromium postgresql
export HF_HUB_OFFLINE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-demo setup-gpu constraints demo test test-fast bench lint mutate clean

# setup: everything `make test` needs; setup-demo: only what `make demo` needs. Each step leaves a
# marker in .venv, so a second run does nothing.
setup: setup-demo $(VENV)/.opclaim-system
setup-demo: $(VENV)/.opclaim-python $(VENV)/.opclaim-wordnet

$(VENV)/.opclaim-python: setup.cfg setup.py pyproject.toml constraints.txt
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q $(TORCH_SPEC)
	$(VPY) -m pip install -q -c constraints.txt -e '.[dev,serve,postgres]'
	touch $@

# apt-get install (as root) of the Debian packages in $(1) that are missing; else say what to install.
define debian
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	else echo "not root: install $(1) yourself ($(2))"; fi
endef

# WordNet (Debian) and nltk's WordNet 3.0 folder inside .venv: METEOR, for the demo and the tests.
$(VENV)/.opclaim-wordnet: $(VENV)/.opclaim-python
	$(call debian,$(DEB_DEMO),METEOR)
	$(VPY) -m opclaim.wordnet --out $(VENV)/nltk_data
	touch $@

# SLURM, Chromium and PostgreSQL: only the tests use them.
$(VENV)/.opclaim-system: $(VENV)/.opclaim-wordnet
	$(call debian,$(DEB_TEST),the SLURM + browser + PostgreSQL tests)
	touch $@

# Flash Attention 2 on a CUDA machine: flash-attn compiles against the torch in .venv, which pip's
# isolated build environment cannot see, hence --no-build-isolation (setup.cfg [gpu]).
setup-gpu: setup
	$(VPY) -m pip install -q -c constraints.txt --no-build-isolation -e '.[gpu]'

# constraints.txt from this venv, after an upgrade that passed `make test` (tools/constraints.py).
constraints: setup
	$(VPY) tools/constraints.py --out constraints.txt

demo: setup-demo
	$(VPY) -m opclaim.demo --config demo.yaml

test: setup
	@set +e; $(VPY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected"; exit 1; fi; exit $$rc

# The unit tier (a few minutes): no model training, no launched ranks or clusters, no browser,
# no SLURM, no demo; `make test` runs these and the rest.
FAST := not slow and not distributed and not slurm and not browser and not gpu
test-fast: setup-demo
	@set +e; $(VPY) -m pytest -m "$(FAST)" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-fast: no tests were collected"; exit 1; fi; exit $$rc

BENCH_MODEL := runs/models/smollm2-135m
bench: setup
	test -f $(BENCH_MODEL)/config.json || $(VPY) -m opclaim models pull smollm2-135m --out $(BENCH_MODEL)
	$(VPY) -m bench

# Mutation testing (slow, not in CI): mutants of a core module against its tests; report in docs/records/mutation.md.
mutate: setup
	$(VPY) -c "import mutmut" 2>/dev/null || $(VPY) -m pip install -q 'mutmut>=3.8,<4'
	$(VPY) tools/mutate.py $(if $(MODULE),$(MODULE),--core) --jobs 2

lint: setup
	$(VPY) -m ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
