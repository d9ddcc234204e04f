# Two commands set everything up: `make run` and `make test`. Both create or reuse .venv.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
export GX_ANALYTICS_ENABLED=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 DAGSTER_DISABLE_TELEMETRY=true TQDM_DISABLE=1

.PHONY: install run test lint ui clean runtimes

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<26"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Optional runtime formats (ExecuTorch .pte, LiteRT .tflite): one pinned tool environment each, beside .venv,
# because neither converter installs into edgeops' own environment (see deploy/runtimes/*.txt).
RUNTIMES_DIR ?= .runtimes
RUNTIME_NAMES := executorch litert

runtimes: $(foreach r,$(RUNTIME_NAMES),$(RUNTIMES_DIR)/$(r)/.ready)

$(RUNTIMES_DIR)/%/.ready: deploy/runtimes/%.txt
	rm -rf $(RUNTIMES_DIR)/$*
	$(PYTHON) -m venv $(RUNTIMES_DIR)/$* || python3 -m venv $(RUNTIMES_DIR)/$*
	$(RUNTIMES_DIR)/$*/bin/python -m pip install --quiet --upgrade "pip>=24,<26"
	$(RUNTIMES_DIR)/$*/bin/python -m pip install --quiet --no-deps -r deploy/runtimes/$*.txt
	$(RUNTIMES_DIR)/$*/bin/python -m pip check
	sha256sum deploy/runtimes/$*.txt | cut -c1-64 > $@

run: $(STAMP)
	$(BIN)/edgeops run

# Two pytest-xdist workers (CI's machine has 2 cores). --dist loadfile keeps each test file on one worker, so a
# module's shared pipeline run happens once. TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff (lint and format, configured in pyproject.toml) over the whole tree, and mypy with the pydantic plugin on edgeops/.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

ui: $(STAMP)
	$(BIN)/python -m edgeops.ui

clean:
	rm -rf .edgeops model_cards/generated
