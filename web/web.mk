# Verifier web app build artifacts (issue 4). Included by the main Makefile.
# The WebAssembly module and Go's wasm_exec.js must exist before any binary
# that embeds package web (issuer, verifier) is built: `make wasm` first.

WASM_OUT     := web/verify/verifier.wasm
WASM_EXEC_JS := web/verify/wasm_exec.js
WASM_SRC     := $(shell find web/wasm verifier bundle qr token policy -name '*.go' ! -name '*_test.go' 2>/dev/null)

.PHONY: wasm
wasm: $(WASM_OUT) $(WASM_EXEC_JS)

$(WASM_OUT): $(WASM_SRC) go.mod go.sum
	GOOS=js GOARCH=wasm go build -trimpath -ldflags="-s -w" -o $@ ./web/wasm

# wasm_exec.js must match the Go that built the module, so it is copied
# from that Go's own tree rather than committed.
$(WASM_EXEC_JS): $(WASM_OUT)
	cp "$$(go env GOROOT)/lib/wasm/wasm_exec.js" $@
