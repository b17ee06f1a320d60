# Two commands on a fresh machine: `make run` and `make test`.
# Both create the local virtual environment (.venv) on first use; nothing is installed globally.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean browser loadgen

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python run.py

# The browser tests drive Debian's chromium (no browser download works offline). Installed here
# only when running as root; otherwise tests/test_browser.py skips and says how to install it.
# A CJK font so screenshots of Chinese pages show characters, not boxes.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei; } || \
		echo "chromium is missing and this is not root: the browser tests will skip"

test: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check engine apps tests benchmarks run.py

# The web benchmark drives the servers with wrk (Debian's package) when it is installed, else
# with a slower asyncio client that takes more of the cores it shares with the servers.
loadgen:
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; } || \
		echo "wrk is missing and this is not root: the web benchmark uses its asyncio client"

bench: $(STAMP) loadgen
	$(BIN)/python run.py bench

clean:
	rm -rf $(VENV) data
