# Quickstart targets (see README.md).
.PHONY: up down test bench-smoke
up:      ## Redis + 3 iogate-node + iogate-lb on :8080 (admin :9100), chat demo at http://127.0.0.1:8080/
	@scripts/local-cluster.sh
down:    ## stop what `make up` started
	@scripts/down.sh
test:    ## fmt check, clippy -D warnings, every test
	@scripts/test.sh
bench-smoke: ## every bench/ script once with tiny numbers (debug binaries; checks the scripts, not speed)
	@scripts/bench-smoke.sh
