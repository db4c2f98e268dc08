# The few verbs people type. `make test` is what CI runs (.ci/run).
#
#   make demo    the whole system on one machine, two rollouts shown live
#   make demo-secured   the same as a secured installation (auth init, creds)
#   make tools   install the pinned nats-server, OpenFeature SDKs and
#                kubernetes-validate (the manifests' schema check) into
#                .tools/, and, when missing, Debian's prometheus for the
#                analysis tests and chromium (with Playwright) for the
#                console's browser tests (idempotent)
#   make test    tools, then format check, clippy, and every test
#   make lint    format check and clippy
#   make fmt     format the workspace
#   make bench   benchmarks (they print figures and ratios)
#   make bench-fleet  the fleet benchmark: propagation at 20/100/1,000 agents
#                against raw NATS, then 10,000 active triggers (≈ 8 minutes:
#                the scale mode stops at a 5-minute cap)
#   make soak    the fault-injection suite over 200 seeds (SEEDS=N for another count)
#   make ci      what CI runs: the same as `make test`

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

# The tests and the demo find nats-server through this variable first
# (crates/devkit, `nats_server_binary`);
# through make they always use the pinned, project-local binary.
export PHASEGATE_NATS_SERVER := $(CURDIR)/.tools/bin/nats-server

.PHONY: tools demo demo-secured test lint fmt bench bench-fleet ci soak

tools:
	bash scripts/install-nats-server.sh
	bash scripts/install-ofrep-sdks.sh
	bash scripts/install-kubernetes-validate.sh
	bash scripts/install-prometheus.sh
	bash scripts/install-chromium.sh

# The whole system on one machine: nats-server, the coordinator, five agents
# and two rollouts, shown live. Under a minute.
demo: tools
	cargo build -p phasegate-cli
	./target/debug/phasegate demo

# The same walk as a secured installation written by `phasegate auth init`:
# anonymous refused, operators as identities with roles, approvals by
# identity.
demo-secured: tools
	cargo build -p phasegate-cli
	./target/debug/phasegate demo --secured

# The end-to-end tests run the real `phasegate` binary: build it first so
# they never run a stale one.
test: tools lint
	cargo build -p phasegate-cli
	cargo test --workspace

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# The micro-benchmarks; the fleet benchmark has its own verb below.
bench: tools
	cargo bench --workspace --exclude phasegate-tests

# Real nats-server, a release `phasegate coordinator` process and agents in
# one process (tests/benches/fleet). Choose with PHASEGATE_FLEET_MODE
# (propagation, scale, all), PHASEGATE_FLEET_AGENTS (e.g. 20,100),
# PHASEGATE_FLEET_CAP_S and the others in its main.rs.
bench-fleet: tools
	cargo build --release -p phasegate-cli
	cargo bench -p phasegate-tests --bench fleet_bench

# The seeded fault-injection suite (tests/tests/faults.rs) runs 20 seeds in
# `make test`; the soak runs more and prints its figures at the end.
SEEDS ?= 200
soak: tools
	cargo build -p phasegate-cli
	PHASEGATE_SOAK_SEEDS=$(SEEDS) cargo test -p phasegate-tests --test faults -- --nocapture

ci: test
