# The README's two commands are `make demo` and `make test`; both set up everything they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall only when pyproject.toml or this recipe changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# deepspeed builds against an installed torch, so torch goes in first (versions from pyproject).
TORCH := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
DEEPSPEED := $(shell grep -o '"deepspeed==[^"]*"' pyproject.toml | tr -d '"')
PYTEST_ARGS ?=

.PHONY: demo test setup bins up down lint unit crds images

setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q "setuptools>=75" wheel
	$(VENV)/bin/pip install -q "$(TORCH)"
	# The one DeepSpeed op the CPU path loads (shm_comm) is compiled here, not on first use:
	# a JIT build takes a file lock that a killed worker leaves behind, and every later worker
	# then waits on it forever. No pip cache: a cached wheel may have been built without it.
	$(VENV)/bin/pip uninstall -q -y deepspeed 2>/dev/null || true
	DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 $(VENV)/bin/pip install -q \
		--no-cache-dir --no-build-isolation "$(DEEPSPEED)"
	$(PY) -c "from deepspeed.git_version_info import installed_ops as o; \
		assert o['deepspeed_shm_comm'], 'deepspeed was installed without its shm_comm op'"
	DS_BUILD_OPS=0 $(VENV)/bin/pip install -q --no-build-isolation -e ".[operator,trainer,dev]"
	rm -f $(VENV)/.installed-* && touch $@

bins:
	bash tests/localcluster/host-packages.sh
	bash tests/localcluster/build-bins.sh >/dev/null

up: setup bins
	$(PY) -m tests.localcluster up

down: setup
	$(PY) -m tests.localcluster down

demo: setup bins images
	$(PY) -m tests.localcluster demo

# Regenerate crds/ from the API models (a unit test fails when they drift).
crds: setup
	$(VENV)/bin/trainkube crds --output-dir crds
	bash tests/charts/sync-crds.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

# The Argo CD health checks run in gopher-lua as Argo CD runs them (tests/argocd, Go).
test: setup bins images lint
	cd tests/argocd && go test ./...
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# The container images, built here with podman (images/build.sh, images/README.md): operator and
# trainer-cpu; IMAGES="operator trainer-cpu trainer-cuda" adds the CUDA trainer. Prints the
# path of each image's archive (for `ctr -n k8s.io images import`), one per line.
images:
	bash images/build.sh $(IMAGES)

.PHONY: kind-demo kind-down
# trainkube on kind (tests/kind/README.md): cluster from kind-config.yaml, images, chart, the examples' chain.
kind-demo: setup
	$(PY) -m tests.kind demo
# Deletes the kind cluster and everything it left on this machine.
kind-down: setup
	$(PY) -m tests.kind down
