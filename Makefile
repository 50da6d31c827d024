# Healthcode. `make run` starts the issuer on its embedded default;
# `make test` runs every test (unit, integration, browser).

GO      ?= go
BIN     := bin
DATA    ?= ./data
ADDR    ?= 127.0.0.1:8080
FUZZTIME ?= 30s

include web/web.mk

.PHONY: all build run test test-short vet fmt bench load fuzz fuzz-ci clean

all: build

build: wasm
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/issuer ./cmd/verifier ./cmd/attester

run: build
	$(BIN)/issuer serve --data $(DATA) --addr $(ADDR) --demo

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Every test: the browser tests need Chromium (.ci/run installs Debian's).
test: wasm vet
	$(GO) test -count=1 -timeout 30m ./...

test-short: wasm
	$(GO) test -count=1 -short ./...

clean:
	rm -rf $(BIN) $(WASM_OUT) $(WASM_EXEC_JS)
