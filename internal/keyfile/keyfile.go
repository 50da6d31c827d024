// Package keyfile stores an attester's Ed25519 private key as a PEM PKCS#8
// file readable by its owner only, and encodes the public key as the string
// an administrator registers with the issuer (base64url, no padding).
package keyfile

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/healthcode/healthcode/internal/atomicfile"
)

// pemType is the only block type Read accepts: unencrypted PKCS#8.
const pemType = "PRIVATE KEY"

// Mode is the permission a key file is written with.
const Mode fs.FileMode = 0o600

// maxFileSize bounds Read; a PEM Ed25519 key is about 120 bytes.
const maxFileSize = 16 << 10

// ErrExists is returned by Write when the file exists and force is false.
var ErrExists = errors.New("keyfile: file already exists")

// Write stores key at path as PEM PKCS#8 with mode 0600. Without force it
// refuses an existing file (O_EXCL, so two writers cannot both win). With
// force it replaces the file through a rename, so a crash never leaves a
// half-written key behind and the new file is 0600 whatever the old one was.
func Write(path string, key ed25519.PrivateKey, force bool) error {
	if len(key) != ed25519.PrivateKeySize {
		return fmt.Errorf("keyfile: not an Ed25519 private key (%d bytes, want %d)", len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("keyfile: encode key: %w", err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
	// The module's one atomic writer: a new key by O_EXCL, a replacement
	// by temporary file and rename, both fsynced with their directory.
	if !force {
		err = atomicfile.Create(path, data, Mode)
	} else {
		err = atomicfile.Write(path, data, Mode)
	}
	if errors.Is(err, atomicfile.ErrExists) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	return nil
}

// Read loads the Ed25519 private key stored at path by Write.
func Read(path string) (ed25519.PrivateKey, error) {
	key, _, err := ReadWithMode(path)
	return key, err
}

// ReadWithMode is Read that also returns the file's permission bits, so a
// caller can warn about a key others can read (see TooOpen) without refusing
// it.
func ReadWithMode(path string) (ed25519.PrivateKey, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read key file: %w", err)
	}
	if fi.IsDir() {
		return nil, 0, fmt.Errorf("key file %s is a directory", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read key file: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, 0, fmt.Errorf("key file %s is larger than %d bytes; it is not an Ed25519 key", path, maxFileSize)
	}
	key, err := parse(data)
	if err != nil {
		return nil, 0, fmt.Errorf("key file %s %w", path, err)
	}
	return key, fi.Mode().Perm(), nil
}

// parse's errors read as the end of "key file PATH ...".
func parse(data []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New(`is not PEM (want a "-----BEGIN PRIVATE KEY-----" block)`)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("has data after its PEM block; want exactly one key")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("holds a PEM block of type %q; want %q (unencrypted PKCS#8)", truncate(block.Type), pemType)
	}
	if len(block.Headers) != 0 {
		return nil, errors.New("has PEM headers; want an unencrypted key without headers")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("does not hold a valid PKCS#8 private key")
	}
	switch k := k.(type) {
	case ed25519.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return nil, errors.New("holds an RSA key; want Ed25519")
	case *ecdsa.PrivateKey:
		return nil, errors.New("holds an ECDSA key; want Ed25519")
	default:
		return nil, fmt.Errorf("holds a %T key; want Ed25519", k)
	}
}

// TooOpen reports whether perm grants anyone but the owner any access, or
// the owner execute.
func TooOpen(perm fs.FileMode) bool { return perm.Perm()&^Mode != 0 }

// EncodePublic returns pub as base64url without padding: the form
// `issuer admin attesters add --key` takes.
func EncodePublic(pub ed25519.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(pub)
}

// ParsePublic reads a public key written by EncodePublic. It is strict: no
// padding, no whitespace, no standard-base64 characters, exactly 32 bytes,
// and a canonical encoding (unused trailing bits zero).
func ParsePublic(s string) (ed25519.PublicKey, error) {
	want := base64.RawURLEncoding.EncodedLen(ed25519.PublicKeySize)
	switch {
	case s == "":
		return nil, errors.New("public key is empty")
	case strings.ContainsAny(s, " \t\r\n"):
		return nil, errors.New("public key contains whitespace")
	case strings.Contains(s, "="):
		return nil, errors.New("public key has base64 padding (=); want base64url without padding")
	case strings.ContainsAny(s, "+/"):
		return nil, errors.New("public key uses standard base64 (+ or /); want base64url (- and _)")
	case len(s) != want:
		return nil, fmt.Errorf("public key is %d characters; an Ed25519 public key in base64url is %d", len(s), want)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("public key is not valid base64url")
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes; want %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

func truncate(s string) string {
	const max = 32
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
