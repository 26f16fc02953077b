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

## Batch mode over the bundled recordings (the server arrives with `serve`).
run:
	$(CARGO) run --release --bin sightflow -- query \
	  $(foreach f,$(wildcard tests/fixtures/rrweb/0*.json),--rrweb $(f) --device $(basename $(notdir $(f)))) \
	  --sql "select session_id, device_id, page_views, clicks, rage_clicks, dead_clicks, error_clicks from sessions order by started_at"
