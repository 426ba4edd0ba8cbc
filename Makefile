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

.PHONY: run test e2e chaos provision devtools build api worker lint bench fidelity containers clean

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

## test: provision, format check, clippy, unit and end-to-end tests with real nsjail; the
## end-to-end suite (escape suite included) runs with warm sandboxes (the default) and again
## cold, and once more on Postgres (TEST_POSTGRES_URL, default the local server; each test
## creates and drops its own database)
test: provision devtools lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run --workspace --locked --no-fail-fast -E 'not test(/^chaos::/)'
	SANDBOX_MODE=cold $(CARGO) nextest run -p api --test api --locked --no-fail-fast -E 'not test(/^chaos::/) and not test(/^warm::/)'
	TEST_STORE=postgres $(CARGO) nextest run -p api --test api --locked --no-fail-fast -E 'not test(/^chaos::/) and not test(/^escape::/)'

## e2e: the playground page (GET /) in headless Chromium against a real API and worker;
## screenshots in target/e2e-artifacts/ (UPDATE_SCREENSHOT=1 also retakes docs/playground.png)
e2e: provision
	@scripts/e2e.sh

## chaos: crash workers and restart Postgres under load; one test at a time (the Postgres
## restart would disturb anything else using it)
chaos: provision
	$(CARGO) build --workspace --bins --locked
	$(CARGO) nextest run -p api --test api --locked --no-fail-fast --test-threads 1 --no-capture -E 'test(/^chaos::/)'

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
