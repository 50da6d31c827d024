package web

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// codesIn returns the string values of the constants named prefix* in the
// Go files given, e.g. every verifier.Reason* code.
func codesIn(t *testing.T, prefix string, files ...string) []string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*` + prefix + `\w*\s*=\s*"([a-z_]+)"`)
	var out []string
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			out = append(out, string(m[1]))
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s constants found in %v", prefix, files)
	}
	return out
}

// tables splits a texts file into its English and Chinese tables.
func tables(t *testing.T, file string) (en, zh string) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	s := string(src)
	i := strings.Index(s, "\n  zh: {")
	if i < 0 {
		t.Fatalf("%s has no zh table", file)
	}
	return s[:i], s[i:]
}

// Every reason the verifier (and the wasm module) can give has words in
// both languages, so no verdict shows a bare code.
func TestVerifierReasonsHaveTexts(t *testing.T) {
	en, zh := tables(t, "verify/i18n.js")
	reasons := codesIn(t, "Reason", "../verifier/verifier.go", "wasm/api.go")
	for _, r := range reasons {
		key := "reason_" + r + ":"
		if !strings.Contains(en, key) || !strings.Contains(zh, key) {
			t.Errorf("verifier reason %q has no text in en and zh (%s)", r, key)
		}
	}
	for _, r := range []string{"key_withdrawn", "window_too_long", "off_grid", "lab_attestation", "unknown_issuer"} {
		if !strings.Contains(strings.Join(reasons, " "), r) {
			t.Errorf("reason %q (contract 2) not found in the verifier", r)
		}
	}
}

// Every refusal the issuer can send a wallet has words in both languages.
func TestWalletRefusalsHaveTexts(t *testing.T) {
	en, zh := tables(t, "wallet/texts.js")
	codes := append(codesIn(t, "Code", "../issuer/redeem.go", "../attestation/attestation.go"), "rate_limited", "body_too_large")
	for _, c := range codes {
		key := "'err." + c + "':"
		if !strings.Contains(en, key) || !strings.Contains(zh, key) {
			t.Errorf("issuer refusal %q has no text in en and zh (%s)", c, key)
		}
	}
}
