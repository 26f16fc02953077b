# The two commands of the quick start are `make run` and `make test`; `.ci/run` calls
# `make test`. Everything else here is a helper of those two.

CARGO ?= cargo

.PHONY: test lint unit browser sdk ui tools run bench

NPM ?= npm
# Installed from the committed lockfile; redone only when the lockfile changes.
SDK_DEPS := sdk/node_modules/.package-lock.json
UI_DEPS := ui/node_modules/.package-lock.json

# The Kafka-compatible broker the Kafka tests start on loopback (installed once).
TANSU ?= $(shell command -v tansu 2>/dev/null || echo $(HOME)/.cargo/bin/tansu)

## Runs every check and test (what CI runs). The SDK and the console are built first:
## the server embeds them (build.rs) and the browser tests load them from there.
test: sdk ui lint unit browser

lint: $(SDK_DEPS) $(UI_DEPS)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd sdk && $(NPM) run --silent typecheck
	cd ui && $(NPM) run --silent typecheck

## The browser SDK (sdk/dist/sdk.js and the ES module); fails over its size budget.
sdk: $(SDK_DEPS)
	cd sdk && $(NPM) run --silent build

$(SDK_DEPS): sdk/package-lock.json
	cd sdk && $(NPM) ci --no-audit --no-fund

## The web console (ui/dist, served at /); prints each chunk's gzipped size and fails
## when the entry is over its budget.
ui: $(UI_DEPS)
	cd ui && $(NPM) run --silent build

$(UI_DEPS): ui/package-lock.json
	cd ui && $(NPM) ci --no-audit --no-fund

## Installs what the tests need, skipping what is already there.
tools:
	@test -x "$(TANSU)" || $(CARGO) install tansu --version 0.6.0 --locked --features libsql
	@command -v psql >/dev/null || (apt-get update -qq && apt-get install -y -qq postgresql-client)
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

unit: tools $(SDK_DEPS) $(UI_DEPS)
	TANSU=$(TANSU) $(CARGO) test --workspace
	cd sdk && $(NPM) test --silent
	cd ui && $(NPM) test --silent

## Chromium against a real `serve` (the debug binary `cargo test` built).
browser: tools $(SDK_DEPS) $(UI_DEPS)
	@test -x target/debug/sightflow || $(CARGO) test --workspace --no-run
	cd sdk && SIGHTFLOW_BIN=$(CURDIR)/target/debug/sightflow node --test --test-concurrency=1 browser/run.mjs
	cd ui && SIGHTFLOW_BIN=$(CURDIR)/target/debug/sightflow node --test --test-concurrency=1 browser/console.mjs

## The server with demo traffic and the console on http://127.0.0.1:8080 (data in ./data).
run: sdk ui
	$(CARGO) run --release --bin sightflow -- serve --demo

## The whole benchmark suite in release mode (not part of `make test`; figures go to
## bench/README.md). KAFKA=host:port adds the Kafka figures against that broker. A small smoke pass of the generator and harness runs in `make test`.
## The soak runs SOAK_SECONDS (10 minutes here; the target's figure is a 30-minute run).
SOAK_SECONDS ?= 600
bench:
	$(CARGO) build --release -p sightflow-bench
	./target/release/sightflow-bench batch --replicas 2000 --workers 1
	./target/release/sightflow-bench batch --replicas 2000 --workers 2
	./target/release/sightflow-bench backfill --devices 2000 --workers 1,2
	./target/release/sightflow-bench memory --devices 10000
	./target/release/sightflow-bench memory --devices 100000
	./target/release/sightflow-bench peers --devices 7700 --batches 1000 --files 100 --points 5
	./target/release/sightflow-bench query --sessions 1000000
	./target/release/sightflow-bench live --sessions 1000000 --rate 50000 --seconds 20 --senders 4 --subscribers 100
	./target/release/sightflow-bench freshness --rates 10000,50000,100000 --seconds 20 --senders 4 --tick-ms 10 --lateness-ms 20 --workers 1
	./target/release/sightflow-bench decode --rate 45000 --seconds 20 --runs 5
	./target/release/sightflow-bench freshness --traffic rrweb --rates 30000,60000,120000 --seconds 20 --senders 512 --open-loop 4096
	./target/release/sightflow-bench soak --rate 20000 --seconds $(SOAK_SECONDS) --sample-s 30
	@if [ -n "$(KAFKA)" ]; then \
	  ./target/release/sightflow-bench backfill --devices 2000 --workers 1,2 --runs 2 --kafka $(KAFKA); \
	  ./target/release/sightflow-bench backfill --devices 2000 --workers 1,2 --runs 2 --shape chunks --kafka $(KAFKA); \
	  ./target/release/sightflow-bench freshness --rates 10000,50000 --seconds 60 --senders 4 --open-loop 64 --kafka $(KAFKA); \
	  ./target/release/sightflow-bench freshness --traffic rrweb --rates 20000,30000 --seconds 30 --senders 64 --open-loop 256 --kafka $(KAFKA); \
	else echo "Kafka figures skipped: make bench KAFKA=127.0.0.1:19092 with a broker running"; fi
