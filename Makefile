# loadtest: every target installs what it needs into .venv first.
# Python >= 3.12 where the machine has one: with target.transport: aiohttp, requests are written
# eagerly only from 3.12 on (on 3.11 the write waits a loop iteration; see README).
PYTHON ?= $(shell for p in python3.12 python3.13 $$HOME/.pyenv/versions/3.12*/bin/python3 \
	$$HOME/.pyenv/versions/3.13*/bin/python3 python3; do \
	"$$p" -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCENARIO ?= scenarios/demo.yaml

.PHONY: install browser demo test lint sweep report bench soak capacity bench-compare stress-ratelimit nightly clean \
	shared-prefix trace-replay chat-sessions

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no python3 (>= 3.10) found"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/loadtest run scenarios/demo.yaml

stress-ratelimit: $(STAMP)
	$(BIN)/loadtest run scenarios/ratelimit-stress.yaml

# Traffic shapes against the mock's prefix cache: shared-prefix groups (cold vs warm TTFT), a Mooncake trace
shared-prefix: $(STAMP)
	$(BIN)/loadtest run scenarios/shared-prefix.yaml

trace-replay: $(STAMP)
	$(BIN)/loadtest run scenarios/trace-replay.yaml
# Conversations from a ShareGPT sample against the mock: per-turn TTFT and per-conversation numbers in summary.json
chat-sessions: $(STAMP)
	$(BIN)/loadtest run scenarios/chat-sessions.yaml

# Run, gate on SLOs, compare with a baseline run; JUnit files for CI. Exit non-zero on either failure.
NIGHTLY := $(if $(filter command line environment,$(origin SCENARIO)),$(SCENARIO),scenarios/nightly.yaml)
nightly: $(STAMP)
	@test -n "$(BASELINE)" || (echo "usage: make nightly SCENARIO=scenarios/nightly.yaml BASELINE=results/<name>/<ts>" && exit 2)
	@mkdir -p results/junit
	$(BIN)/loadtest run $(NIGHTLY) --junit results/junit/slo.xml; slo=$$?; \
	run=$$(ls -td results/$$($(BIN)/loadtest validate $(NIGHTLY) | sed -n 's/^name: //p')/2*/ | head -1); \
	$(BIN)/loadtest compare $(BASELINE) $$run --junit results/junit/compare.xml; cmp=$$?; \
	echo "SLO gate exit $$slo, comparison exit $$cmp"; test $$slo = 0 -a $$cmp = 0

sweep: $(STAMP)
	$(BIN)/loadtest run $(SCENARIO)

report: $(STAMP)
	@test -n "$(RUN)" || (echo "usage: make report RUN=results/<name>/<timestamp>" && exit 2)
	$(BIN)/loadtest report $(RUN)

# Debian's Chromium and its driver, for the test that opens report.html in a real browser.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver (for the report test)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }

# Tests run in two passes: those that only wait on I/O on TEST_WORKERS processes (pytest-xdist; the
# tests that start Ray share one worker: tests/conftest.py RAY_GROUP), then those marked `timing`
# (latency, lag, throughput, rates) one at a time with nothing else running. Both passes always run;
# the target fails if either does.
TEST_WORKERS ?= 3
test: $(STAMP) browser
	$(BIN)/ruff check loadtest tests bench
	$(BIN)/ruff format --check loadtest tests bench
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not timing"; parallel=$$?; \
	$(BIN)/pytest -q -p no:xdist -m timing; timing=$$?; \
	test $$parallel = 0 -a $$timing = 0 || { echo "make test: parallel pass exit $$parallel, timing pass exit $$timing"; exit 1; }

bench: $(STAMP)
	$(BIN)/python -m bench.run --reps $(or $(REPS),3)

soak: $(STAMP)
	$(BIN)/python -m bench.soak $(REQUESTS)

capacity: $(STAMP)
	$(BIN)/python -m bench.capacity $(if $(filter command line environment,$(origin SCENARIO)),$(SCENARIO),)

bench-compare: $(STAMP)
	$(BIN)/python -m bench.compare_noise $(PAIRS)

lint: $(STAMP)
	$(BIN)/ruff check loadtest tests bench
	$(BIN)/ruff format --check loadtest tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
