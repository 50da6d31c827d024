package kek

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, _, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("a private key's 32 secret bytes!")
	blob, err := k.Seal(secret, []byte("signing key K1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(blob, secret) {
		t.Fatal("sealed blob holds the plaintext")
	}
	got, err := k.Open(blob, []byte("signing key K1"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := k.Open(blob, []byte("signing key K2")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with another aad: %v, want ErrCorrupt", err)
	}
	blob[len(blob)-1] ^= 1
	if _, err := k.Open(blob, []byte("signing key K1")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of altered blob: %v, want ErrCorrupt", err)
	}
	if _, err := k.Open(blob[:len(sealMagic)+3], nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of truncated blob: %v, want ErrCorrupt", err)
	}
	if _, err := k.Open(secret, nil); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("Open of plain bytes: %v, want ErrNotSealed", err)
	}
	other, _, _ := Generate()
	blob[len(blob)-1] ^= 1
	if _, err := other.Open(blob, []byte("signing key K1")); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("Open under another KEK: %v, want ErrWrongKEK", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	k1, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreate: created=%v, %v", created, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("KEK file mode %04o, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second LoadOrCreate: created=%v, %v", created, err)
	}
	if k1.ID() != k2.ID() {
		t.Fatal("reloaded KEK differs")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable KEK: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		"":            "not a key-encryption key file",
		"hello":       "not a key-encryption key file",
		"hckek1:!!!":  "not base64url",
		"hckek1:AAAA": "must be 32 bytes, got 3",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", in, err, want)
		}
	}
}
