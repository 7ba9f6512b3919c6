# llmgateway — every entry point a developer or CI needs.
#   make run    install into .venv/ (Python 3.13) and serve on the embedded SQLite store
#   make test   install, then ruff, black --check, mypy --strict, pytest with coverage
#   make bench  the performance harness (installs nginx and wrk from Debian packages)
#   make example  regenerate config/example_full.yaml from the option declarations

PYTHON ?= $(shell command -v python3.13 || pyenv which python3.13 2>/dev/null || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= $(or $(LLMGW_CONFIG),config/providers.yaml)

.PHONY: install run test lint typecheck pytest bench example lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys; assert sys.version_info[:2] == (3, 13), sys.version'

$(VENV)/.installed: $(BIN)/python requirements-dev.txt pyproject.toml
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

$(CONFIG):
	mkdir -p $(dir $(CONFIG))
	cp config/example_minimal.yaml $(CONFIG)
	@echo "created $(CONFIG) from config/example_minimal.yaml"

# The minimal example reads its client token from OPENAI_MAIN_TOKEN and its admin token from
# LLMGW_ADMIN_TOKEN; for each one not set, `make run` makes a random token once (data/gateway-token,
# data/admin-token: not in git, readable by the owner only) and prints it. The admin token guards
# /-/status, /-/events and /metrics, which without one answer loopback clients only.
TOKEN := $(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))'

run: install $(CONFIG)
	@mkdir -p data keys/openai-main
	@umask 077; [ -s data/gateway-token ] || $(TOKEN) > data/gateway-token
	@umask 077; [ -s data/admin-token ] || $(TOKEN) > data/admin-token
	@echo "client token (OPENAI_MAIN_TOKEN): $${OPENAI_MAIN_TOKEN:-$$(cat data/gateway-token)}"
	@echo "point an SDK at http://localhost:55300/v1 (OpenAI), http://localhost:55300 (Anthropic, Gemini) with that token as its API key"
	@echo "put your provider keys in keys/openai-main/*.txt, one per line (or inline under providers.openai-main.keys)"
	@echo "admin token (LLMGW_ADMIN_TOKEN):  $${LLMGW_ADMIN_TOKEN:-$$(cat data/admin-token)}"
	@grep -q 'LLMGW_ADMIN_TOKEN' $(CONFIG) || echo "note: $(CONFIG) does not read \$${LLMGW_ADMIN_TOKEN}; add server: {admin_token: \"\$${LLMGW_ADMIN_TOKEN}\"} to it"
	OPENAI_MAIN_TOKEN="$${OPENAI_MAIN_TOKEN:-$$(cat data/gateway-token)}" \
	LLMGW_ADMIN_TOKEN="$${LLMGW_ADMIN_TOKEN:-$$(cat data/admin-token)}" \
	$(BIN)/llmgateway serve --config $(CONFIG)

lint: install
	$(BIN)/ruff check llmgateway tests bench
	$(BIN)/black --check llmgateway tests bench

typecheck: install
	$(BIN)/mypy llmgateway

pytest: install
	$(BIN)/pytest --cov=llmgateway --cov-report=term-missing

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/run.py

# After changing an option's declaration (llmgateway/config/schemas.py): regenerate the full
# example, which a test compares with what the declarations render.
example: install
	$(BIN)/python -c 'from llmgateway.config.scaffold import render_example; print(render_example(), end="")' > config/example_full.yaml

# Maintainers: rewrite poetry.lock, then the hash-pinned requirement files pip installs from
# (needs poetry and poetry-plugin-export).
lock:
	poetry lock
	poetry export --format requirements.txt --output requirements.txt
	poetry export --format requirements.txt --with dev --output requirements-dev.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage
