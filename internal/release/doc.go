// Package release tests the release build: `make dist` (static binaries of
// issuer, verifier and attester for linux/amd64, linux/arm64, darwin/arm64
// and windows/amd64, with SHA256SUMS). It has no code of its own.
package release
