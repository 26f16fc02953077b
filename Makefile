# The two commands of the quick start are `make run` and `make test`; `.ci/run` calls
# `make test`. Everything else here is a helper of those two.

CARGO ?= cargo

.PHONY: test lint unit run bench-smoke

## Runs every check and test (what CI runs).
test: lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

## The server with demo traffic on http://127.0.0.1:8080 (data in ./data).
run:
	$(CARGO) run --release --bin sightflow -- serve --demo
