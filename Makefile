# The two commands a new machine needs (see README.md):
#   make demo   set everything up, then train a 5-fold DenseNet121 ensemble on a generated data set
#   make test   set everything up, then run the whole test suite
# Both need only the Rust toolchain, Python 3.11 and pip; make test also needs Node.js 20
# with npm, and apt (as root or through sudo) to install Chromium and tshark when missing.

SHELL := /bin/bash
ROOT := $(abspath .)
VENV ?= $(ROOT)/.venv
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
export FOLDTRAIN_PYTHON := $(VENV)/bin/python

DEMO_DATA ?= $(ROOT)/demo-data
DEMO_OUT ?= $(ROOT)/demo-out

.PHONY: bootstrap otel-backend browser netns-tools build release demo test lint fmt bench fuzz

bootstrap:
	@bash scripts/bootstrap.sh

# The OTLP backend (Arize Phoenix, in .venv-otel/) that tests/tests/otlp_backend.rs sends
# a job's spans to and reads them back from.
otel-backend:
	@bash scripts/install_otel_backend.sh

# Headless Chromium (Debian's, from apt) and playwright-core (npm, in tests/browser/) that
# tests/tests/report_browser.rs opens a job's report.html with.
browser:
	@bash scripts/install_browser.sh

# tshark (Debian's, from apt) that tests/tests/netns.rs captures a job's traffic between
# network namespaces with. The test runs as root only; as root, make test requires it.
netns-tools:
	@bash scripts/install_netns_tools.sh

build: bootstrap
	cargo build --workspace --bins

release: bootstrap
	cargo build --release --workspace --bins

test: build otel-backend browser netns-tools
	FOLDTRAIN_REQUIRE_NETNS=$$( [ $$(id -u) = 0 ] && echo 1 || echo 0) cargo test --workspace --no-fail-fast

# The property tests of what peers and files feed us (the worker-event assembler, blob
# chunk reassembly and uploads, the dataset CSV reader), FUZZ_CASES cases each instead of
# make test's few hundred: about a minute on two cores at the default.
FUZZ_CASES ?= 10000
fuzz: bootstrap
	PROPTEST_CASES=$(FUZZ_CASES) cargo test -p foldtrain-proto -p foldtrain-coordinator -- props server::blobs::tests

lint: bootstrap
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

demo: release
	bash scripts/demo.sh "$(DEMO_DATA)" "$(DEMO_OUT)"
