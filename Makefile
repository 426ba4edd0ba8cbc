# Two commands matter: `make run` and `make test`. Everything they need is installed here.

RUNTIME_DIR ?= /opt/runbox
export RUNTIME_DIR
export NSJAIL_PATH ?= $(RUNTIME_DIR)/bin/nsjail
export PYTHON_RUNTIME ?= $(RUNTIME_DIR)/python
export NSJAIL_CONFIG ?= $(CURDIR)/nsjail.cfg
PORT ?= 8080
export PORT
DATABASE_URL ?= sqlite://$(CURDIR)/data/jobs.db
export DATABASE_URL
CARGO ?= cargo

.PHONY: run test test-fast test-store test-system e2e chaos provision devtools build api worker lint bench fidelity containers clean

## provision: install the sandbox runtime (Python + numpy + pandas) and nsjail; idempotent
provision:
	@scripts/provision.sh

## devtools: install the tools the tests use (the OpenAPI validator, CPython's test suite);
## idempotent
devtools: provision
	@scripts/devtools.sh

build:
	$(CARGO) build --release --locked --bins

## run: start the API on 127.0.0.1:$(PORT) and one worker on SQLite; Ctrl-C stops both
run: provision build
	@scripts/run.sh

## api / worker: start one process (e.g. extra workers: `make worker` in another terminal, each
## on the next free metrics port from 9091)
api: provision build
	./target/release/api

worker: provision build
	./target/release/worker

## lint: formatting, clippy, and licenses, bans and sources of every dependency (deny.toml)
lint: devtools
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(RUNTIME_DIR)/cargo-tools/bin/cargo-deny check licenses bans sources

## test: provision, lint, then every test tier (.config/nextest.toml): tier 1 (unit tests and
## the HTTP contract in process), tier 2 (the store conformance suite on SQLite and Postgres),
## tier 3 (the real binaries with nsjail: the end-to-end and escape suites with warm sandboxes,
## again cold, and once more on Postgres, TEST_POSTGRES_URL, default the local server; each
## test creates and drops its own database), then the running API fuzzed against its OpenAPI
## description (scripts/schemathesis.sh), the Python client's suite against the running service
## (scripts/python-client.sh), and tier 4: `make chaos`, then `make containers`
## (the images built and the compose stack run under podman; about 10 min more the first time)
test: provision devtools lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile fast
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile store
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile system
	SANDBOX_MODE=cold $(CARGO) nextest run --workspace --locked --no-fail-fast --profile system -E 'not test(/^warm::/)'
	TEST_STORE=postgres $(CARGO) nextest run --workspace --locked --no-fail-fast --profile system -E 'not test(/^escape::/)'
	@scripts/schemathesis.sh
	@scripts/python-client.sh
	$(MAKE) --no-print-directory chaos
	$(MAKE) --no-print-directory containers

## test-fast: tier 1 alone: unit tests and the HTTP contract in process; no root, sandbox or
## Postgres needed, seconds on a warm build
test-fast:
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile fast

## test-store: tier 2 alone: the JobStore conformance suite on SQLite and Postgres
test-store:
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile store

## test-system: tier 3 alone: the real api and worker with nsjail sandboxes (warm), as root
test-system: provision
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile system

## e2e: the playground page (GET /) in headless Chromium against a real API and worker;
## screenshots in target/e2e-artifacts/ (UPDATE_SCREENSHOT=1 also retakes docs/playground.png)
e2e: provision
	@scripts/e2e.sh

## chaos: crash workers and restart Postgres under load; one test at a time (the Postgres
## restart would disturb anything else using it)
chaos: provision
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --no-fail-fast --profile chaos --no-capture

## bench: /execute latency, throughput and idle CPU on SQLite and Postgres against their targets,
## as ratios to floors measured in the same run (reports OK/MISS), then the queue alone
bench: provision
	$(CARGO) build --release --locked --bins --examples
	scripts/bench.sh

## containers: build both images from the Dockerfiles (and, where no registry can be reached,
## the base images), start docker-compose.yml through podman with three workers, and run the
## container test: README examples, 300 jobs, scaling 3 -> 1 -> 4, a killed worker, an API
## restart, health checks
containers:
	@containers/test.sh

## fidelity: pycheck against CPython 3.11's compile() on every file of its library and test
## suite; fails on any file pycheck refuses and CPython accepts, lists the opposite cases
fidelity:
	@scripts/devtools.sh --testsuite
	$(CARGO) test --locked -p pycheck --test pycheck -- --ignored --nocapture fidelity

clean:
	$(CARGO) clean
	rm -rf data
