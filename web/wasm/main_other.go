//go:build !(js && wasm)

package main

import (
	"fmt"
	"os"
)

// The module only runs in a browser; this keeps `go build ./...` working
// on the host, where its API is tested.
func main() {
	fmt.Fprintln(os.Stderr, "this is the verifier web app's WebAssembly module: build it with GOOS=js GOARCH=wasm (make wasm)")
	os.Exit(2)
}
