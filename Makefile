# Rescind — developer entry points. `make run` and `make test` work from a fresh clone.
SHELL := /bin/bash
.DEFAULT_GOAL := install

PYTHON ?= python3
BOOTSTRAP := .bootstrap
UV := $(shell command -v uv 2>/dev/null || echo $(BOOTSTRAP)/bin/uv)
VENV := .venv
PROTO_OUT := libs/rescind-common/src/rescind_common/proto
PROTO_SRC := $(shell find proto -name '*.proto')
STAMP := $(VENV)/.rescind-installed

.PHONY: install gen run demo test test-fast test-unit lint typecheck proto-check docs bench clean

$(BOOTSTRAP)/bin/uv:
	$(PYTHON) -m venv $(BOOTSTRAP)
	$(BOOTSTRAP)/bin/pip install -q 'uv>=0.5'

$(STAMP): $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
	$(UV) sync --frozen --all-packages
	touch $@

# Generated protobuf code is built here, never committed (see .gitignore).
$(PROTO_OUT)/.generated: $(STAMP) $(PROTO_SRC)
	rm -rf $(PROTO_OUT)/rescind
	mkdir -p $(PROTO_OUT)
	$(VENV)/bin/python -m grpc_tools.protoc -Iproto \
	  --python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) $(PROTO_SRC)
	# protoc writes imports between our files as top-level `rescind.v1`; they live in the package.
	sed -i 's/^from rescind\.v1 import/from rescind_common.proto.rescind.v1 import/' $(PROTO_OUT)/rescind/v1/*_pb2.py*
	find $(PROTO_OUT)/rescind -type d -exec touch {}/__init__.py \;
	touch $(PROTO_OUT)/__init__.py $@

install: $(STAMP) $(PROTO_OUT)/.generated

gen: $(PROTO_OUT)/.generated

run: install
	$(VENV)/bin/rescind run

# Against a running `make run`: the whole story with local webhook receivers.
demo: install
	$(VENV)/bin/rescind demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy libs/rescind-common/src libs/rescind-cli/src services/consent-api/src services/registry/src services/revocation-worker/src

proto-check: install
	$(VENV)/bin/buf lint proto
	scripts/buf-breaking

test: install lint typecheck proto-check
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-fast: install
	$(VENV)/bin/pytest -q -x $(PYTEST_ARGS)

# docs/configuration.md is generated from the settings classes (a test fails when it is stale).
docs: install
	$(VENV)/bin/python scripts/config_docs.py > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

# Pure logic only (tests/unit): no PostgreSQL, no broker, a second or so.
test-unit: install
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

# Not part of `make test`. RESCIND_BENCH_SECONDS=15 for a quick run; RESCIND_BENCH_ONLY=stack for one.
bench: install
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV) $(BOOTSTRAP) $(PROTO_OUT)/rescind $(PROTO_OUT)/.generated .rescind
