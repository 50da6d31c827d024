# Healthcode. `make run` starts the issuer on its embedded default;
# `make test` runs every test (unit, integration, browser).

GO      ?= go
BIN     := bin
DATA    ?= ./data
ADDR    ?= 127.0.0.1:8080
FUZZTIME ?= 30s

include web/web.mk

.PHONY: all build run test test-short vet fmt bench load fuzz fuzz-ci clean dist version

all: build

build: wasm
	@mkdir -p $(BIN)
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/issuer ./cmd/verifier ./cmd/attester

run: build
	$(BIN)/issuer serve --data $(DATA) --kek $(DATA).kek --addr $(ADDR) --demo

# A local cluster (README "Running it at scale"): 3 etcd members, a 3+3
# Redis Cluster and 3 issuer replicas on 127.0.0.1, state and logs under
# $(CLUSTER_DATA); it keeps running after make returns. cluster-down stops
# it and keeps the data; CLEAN=1 deletes it too.
CLUSTER_DATA ?= ./cluster-data

.PHONY: cluster cluster-down

cluster: build
	$(GO) build -o $(BIN)/ ./cmd/devcluster
	$(BIN)/devcluster up --dir $(CLUSTER_DATA) --issuer $(BIN)/issuer

cluster-down:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/devcluster
	$(BIN)/devcluster down --dir $(CLUSTER_DATA)$(if $(CLEAN), --clean)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Every test: the browser tests need Chromium (.ci/run installs Debian's).
test: wasm vet
	$(GO) test -count=1 -timeout 30m ./...

test-short: wasm
	$(GO) test -count=1 -short ./...

clean:
	rm -rf $(BIN) $(DIST) $(WASM_OUT) $(WASM_EXEC_JS)

# Release builds: static binaries (no cgo, paths trimmed, the VCS revision
# stamped for --version) of the three programs for the machines issuers,
# labs and venues use, with their SHA-256 sums. DIST_PLATFORMS narrows it
# (the release test builds linux/amd64 only).
DIST           ?= dist
DIST_PLATFORMS ?= linux/amd64 linux/arm64 darwin/arm64 windows/amd64
DIST_PROGRAMS  := issuer verifier attester
SHA256SUM      ?= sha256sum

dist: wasm
	@rm -rf $(DIST) && mkdir -p $(DIST)
	@set -e; for p in $(DIST_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; if [ "$$os" = windows ]; then ext=.exe; fi; \
	  for prog in $(DIST_PROGRAMS); do \
	    echo "dist: $$prog $$os/$$arch"; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto -ldflags='-s -w' \
	      -o $(DIST)/$$prog-$$os-$$arch$$ext ./cmd/$$prog; \
	  done; \
	done
	cd $(DIST) && $(SHA256SUM) $$(ls | grep -v '^SHA256SUMS$$') > SHA256SUMS
	@cat $(DIST)/SHA256SUMS

# What --version prints for a build from this checkout.
version:
	@$(GO) run -buildvcs=auto ./cmd/issuer --version

# Load and benchmarks (BENCHMARKS.md). The load generator only targets
# 127.0.0.1: it starts its own issuer on a fresh temp dir and a free port.
LOAD_SECONDS       ?= 60
LOAD_CONCURRENCY   ?= 64
BENCH_LOAD_SECONDS ?= 20
NAME               ?= new
LIVE               ?= 1000000

.PHONY: bench-save bench-scale bench-cluster load-bins

load-bins:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/issuer ./cmd/loadgen

load: load-bins
	$(BIN)/loadgen --issuer $(BIN)/issuer --duration $(LOAD_SECONDS)s --concurrency $(LOAD_CONCURRENCY)

# Go benchmarks + a $(BENCH_LOAD_SECONDS)s load run, one summary table.
bench: wasm load-bins
	GO=$(GO) BENCH_LOAD_SECONDS=$(BENCH_LOAD_SECONDS) LOAD_CONCURRENCY=$(LOAD_CONCURRENCY) scripts/bench.sh report

# The issuer at city scale: a fresh store filled to $(LIVE) live replay
# records, then p99 through a sweep vs without, RssAnon, inventory and
# start-up times (BENCHMARKS.md). JSON in bin/bench/scale-$(LIVE).json.
bench-scale: load-bins
	@mkdir -p $(BIN)/bench
	$(BIN)/loadgen scale --issuer $(BIN)/issuer --live $(LIVE) --concurrency $(LOAD_CONCURRENCY) --json $(BIN)/bench/scale-$(LIVE).json

# Issuer replicas (1, 2, then REPLICAS) on a local 3-member etcd and 3+3
# Redis Cluster, CLUSTER_SECONDS of load each: redemptions/s, p99, CPU and
# store requests per redemption of each process kind, Redis memory per
# record (BENCHMARKS.md). JSON in bin/bench/cluster.json.
REPLICAS        ?= 3
CLUSTER_SECONDS ?= 20
bench-cluster: load-bins
	@mkdir -p $(BIN)/bench
	$(BIN)/loadgen cluster --issuer $(BIN)/issuer --replicas $(REPLICAS) --duration $(CLUSTER_SECONDS)s --concurrency $(LOAD_CONCURRENCY) --json $(BIN)/bench/cluster.json

# Raw Go benchmark output (BENCH_COUNT runs, default 6) to bin/bench/$(NAME).txt
# for benchstat: make bench-save NAME=old; ...; make bench-save NAME=new.
bench-save: wasm
	GO=$(GO) scripts/bench.sh save $(NAME)

# Every fuzz target, "package:Target". scripts/fuzz.sh runs one go test
# invocation each (go test fuzzes one target at a time). New corpus entries go
# to the Go cache; a failure writes its input to the package's
# testdata/fuzz, where it stays as a regression case.
FUZZ_TARGETS := ./attestation:FuzzVerify ./bundle:FuzzOpen ./policy:FuzzParse ./policy:FuzzValidate \
	./verifier:FuzzVerify ./issuer/httpapi:FuzzRedeemBody

# Each target for $(FUZZTIME) (default 30s), one after another.
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME) $(FUZZ_TARGETS)

# The same, 5s each: a smoke run for CI.
fuzz-ci:
	GO=$(GO) scripts/fuzz.sh 5s $(FUZZ_TARGETS)
