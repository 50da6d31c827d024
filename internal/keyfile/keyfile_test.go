package keyfile

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.key")
	key := newKey(t)
	if err := Write(path, key, false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %o, want 600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----\n") {
		t.Fatalf("file does not start with a PKCS#8 PEM block:\n%s", data)
	}
	got, mode, err := ReadWithMode(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) {
		t.Fatal("read key differs from written key")
	}
	if mode != 0o600 || TooOpen(mode) {
		t.Fatalf("mode = %o, TooOpen = %v", mode, TooOpen(mode))
	}
}

func TestWriteRefusesOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.key")
	first := newKey(t)
	if err := Write(path, first, false); err != nil {
		t.Fatal(err)
	}
	err := Write(path, newKey(t), false)
	if !errors.Is(err, ErrExists) {
		t.Fatalf("err = %v, want ErrExists", err)
	}
	if got, _ := Read(path); !got.Equal(first) {
		t.Fatal("refused write still changed the file")
	}
}

func TestWriteForceReplacesAndTightensMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.key")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	if err := Write(path, key, true); err != nil {
		t.Fatal(err)
	}
	got, mode, err := ReadWithMode(path)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(key) || mode != 0o600 {
		t.Fatalf("after force: equal=%v mode=%o", got.Equal(key), mode)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp file left behind: %v", entries)
	}
}

func TestWriteRefusesBadKey(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "a.key"), ed25519.PrivateKey{1, 2}, false)
	if err == nil || err.Error() != "keyfile: not an Ed25519 private key (2 bytes, want 64)" {
		t.Fatalf("err = %v", err)
	}
}

func TestTooOpen(t *testing.T) {
	for perm, want := range map[os.FileMode]bool{0o600: false, 0o400: false, 0o644: true, 0o640: true, 0o700: true, 0o606: true} {
		if got := TooOpen(perm); got != want {
			t.Errorf("TooOpen(%o) = %v, want %v", perm, got, want)
		}
	}
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	edDER, err := x509.MarshalPKCS8PrivateKey(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: edDER})
	cases := []struct {
		name, content, want string
	}{
		{"text", "hello", `is not PEM (want a "-----BEGIN PRIVATE KEY-----" block)`},
		{"ec", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})), "holds an ECDSA key; want Ed25519"},
		{"type", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})), `holds a PEM block of type "EC PRIVATE KEY"; want "PRIVATE KEY" (unencrypted PKCS#8)`},
		{"garbage", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")})), "does not hold a valid PKCS#8 private key"},
		{"two", string(good) + string(good), "has data after its PEM block; want exactly one key"},
		{"headers", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: edDER})), "has PEM headers; want an unencrypted key without headers"},
		{"huge", strings.Repeat("A", maxFileSize+1), "is larger than 16384 bytes; it is not an Ed25519 key"},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.name)
		if err := os.WriteFile(path, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		want := "key file " + path + " " + c.want
		if err == nil || err.Error() != want {
			t.Errorf("%s: err = %v\nwant %s", c.name, err, want)
		}
	}

	missing := filepath.Join(dir, "missing")
	if _, err := Read(missing); err == nil || err.Error() != "cannot read key file: open "+missing+": no such file or directory" {
		t.Errorf("missing: err = %v", err)
	}
	if _, err := Read(dir); err == nil || err.Error() != "key file "+dir+" is a directory" {
		t.Errorf("dir: err = %v", err)
	}
}

func TestPublicRoundTrip(t *testing.T) {
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	s := EncodePublic(pub)
	if len(s) != 43 || strings.ContainsAny(s, "=+/") {
		t.Fatalf("encoding %q is not raw base64url of 32 bytes", s)
	}
	got, err := ParsePublic(s)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pub) {
		t.Fatal("parsed key differs")
	}
}

func TestParsePublicErrors(t *testing.T) {
	// Bytes whose standard encoding holds + and /, to test the alphabet check.
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = 0xfb
	}
	good := base64.RawURLEncoding.EncodeToString(raw)
	// The last character carries 4 unused bits; 'B' sets one of them.
	nonCanonical := good[:42] + "B"
	if _, err := base64.RawURLEncoding.DecodeString(nonCanonical); err != nil {
		t.Fatalf("precondition: lenient decoder should accept %q: %v", nonCanonical, err)
	}
	cases := map[string]string{
		"":                                     "public key is empty",
		good + "\n":                            "public key contains whitespace",
		base64.URLEncoding.EncodeToString(raw): "public key has base64 padding (=); want base64url without padding",
		base64.RawStdEncoding.EncodeToString(raw): "public key uses standard base64 (+ or /); want base64url (- and _)",
		good[:40]: "public key is 40 characters; an Ed25519 public key in base64url is 43",
		base64.RawURLEncoding.EncodeToString(raw[:31]): "public key is 42 characters; an Ed25519 public key in base64url is 43",
		good[:42] + "*": "public key is not valid base64url",
		nonCanonical:    "public key is not valid base64url",
	}
	for in, want := range cases {
		_, err := ParsePublic(in)
		if err == nil || err.Error() != want {
			t.Errorf("ParsePublic(%q) = %v, want %q", in, err, want)
		}
	}
}
