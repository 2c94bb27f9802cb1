# GlanceSeg: `make run` starts the appliance on its demo, `make test` runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUILD_VENV := .venv-build
STAMP  := $(VENV)/.installed
BUILD_STAMP := $(BUILD_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test test-fast venv build-venv models eval bench clean

run: $(STAMP)
	$(BIN)/glanceseg models check
	$(BIN)/glanceseg serve --demo --host $(HOST) --port $(PORT)

# The whole suite. pytest exits 5 when it collects no test; make treats that as failure too.
# The appliance's virtualenv never holds torch, so the fine-tuning tests that need it run a
# second time under the build virtualenv (there they cannot skip).
test: $(STAMP) $(BUILD_STAMP)
	$(BIN)/pytest
	REQUIRE_TORCH=1 $(BUILD_VENV)/bin/pytest -p no:cacheprovider tests/finetune

# Everything but the model-build tests (no torch virtualenv needed).
test-fast: $(STAMP)
	$(BIN)/pytest -m "not build"

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $@

# Torch is a build-time tool only: it lives in its own virtualenv, never in the appliance's.
build-venv: $(BUILD_STAMP)
$(BUILD_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/pip install --upgrade pip
	$(BUILD_VENV)/bin/pip install -e '.[build,test]'
	touch $@

models: $(BUILD_STAMP)
	$(BUILD_VENV)/bin/python models/build.py --check

eval: $(STAMP)
	$(BIN)/glanceseg eval ../shared/data/idrid-ma --split report --out artifacts/eval

bench: $(STAMP)
	$(BIN)/glanceseg bench --json

clean:
	rm -rf $(VENV) $(BUILD_VENV) artifacts .pytest_cache
