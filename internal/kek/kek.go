// Package kek holds the issuer's key-encryption key: the one secret kept
// outside the data directory, under which every private key inside it
// (token signing keys, the bundle key, replay epoch keys) is sealed with
// AES-256-GCM. A copy of the data directory without the KEK signs nothing
// and links no replay record.
package kek

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/healthcode/healthcode/internal/atomicfile"
)

const (
	// Size is the KEK's length in bytes.
	Size = 32
	// filePrefix starts a KEK file, so that secret scanners and people can
	// tell what it is.
	filePrefix = "hckek1:"
	// FileMode is the mode a KEK file is created with and must have.
	FileMode fs.FileMode = 0o600

	idSize    = 8
	nonceSize = 12
)

// sealMagic starts every sealed blob; a blob without it was never sealed
// (a data directory from before sealing).
var sealMagic = []byte("hcseal1\x00")

// Errors of Open.
var (
	// ErrNotSealed: the bytes are not a sealed blob at all.
	ErrNotSealed = errors.New("kek: data is not sealed")
	// ErrWrongKEK: sealed under another key-encryption key.
	ErrWrongKEK = errors.New("kek: sealed under a different key-encryption key")
	// ErrCorrupt: sealed under this KEK, but altered or cut short.
	ErrCorrupt = errors.New("kek: sealed data fails authentication (altered or truncated)")
)

// Key is a key-encryption key. It is safe for concurrent use.
type Key struct {
	id   [idSize]byte
	aead cipher.AEAD
}

// Generate makes a new random KEK (tests, and the first start).
func Generate() (*Key, []byte, error) {
	raw := make([]byte, Size)
	if _, err := rand.Read(raw); err != nil {
		return nil, nil, fmt.Errorf("kek: generate: %w", err)
	}
	k, err := New(raw)
	return k, raw, err
}

// New makes a Key from its Size raw bytes.
func New(raw []byte) (*Key, error) {
	if len(raw) != Size {
		return nil, fmt.Errorf("kek: key must be %d bytes, got %d", Size, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Key{aead: aead}
	sum := sha256.Sum256(append([]byte("healthcode kek id\x00"), raw...))
	copy(k.id[:], sum[:])
	return k, nil
}

// ID names the KEK without revealing it: 16 hex digits, stored in every
// blob it seals so that a wrong KEK is told from corrupt data.
func (k *Key) ID() string { return hex.EncodeToString(k.id[:]) }

// Seal encrypts plaintext. aad binds the blob to its place (say, "signing
// key K1"), so a sealed blob moved to another record does not open there.
func (k *Key) Seal(plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, 0, len(sealMagic)+idSize+nonceSize+len(plaintext)+k.aead.Overhead())
	out = append(out, sealMagic...)
	out = append(out, k.id[:]...)
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("kek: nonce: %w", err)
	}
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, plaintext, k.additional(aad)), nil
}

// Open decrypts a blob made by Seal with the same aad.
func (k *Key) Open(sealed, aad []byte) ([]byte, error) {
	if !IsSealed(sealed) {
		return nil, ErrNotSealed
	}
	rest := sealed[len(sealMagic):]
	if len(rest) < idSize+nonceSize+k.aead.Overhead() {
		return nil, ErrCorrupt
	}
	if !bytes.Equal(rest[:idSize], k.id[:]) {
		return nil, fmt.Errorf("%w (blob sealed under KEK %x, this KEK is %s)", ErrWrongKEK, rest[:idSize], k.ID())
	}
	nonce := rest[idSize : idSize+nonceSize]
	pt, err := k.aead.Open(nil, nonce, rest[idSize+nonceSize:], k.additional(aad))
	if err != nil {
		return nil, ErrCorrupt
	}
	return pt, nil
}

func (k *Key) additional(aad []byte) []byte {
	return append(append([]byte("healthcode seal v1\x00"), k.id[:]...), aad...)
}

// IsSealed reports whether b starts like a sealed blob.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, sealMagic) }

// Encode is the text of a KEK file.
func Encode(raw []byte) []byte {
	return []byte(filePrefix + base64.RawURLEncoding.EncodeToString(raw) + "\n")
}

// Parse reads the text of a KEK file.
func Parse(text []byte) (*Key, error) {
	s := strings.TrimSpace(string(text))
	if !strings.HasPrefix(s, filePrefix) {
		return nil, fmt.Errorf("kek: not a key-encryption key file (want a line starting %q)", filePrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(filePrefix):])
	if err != nil {
		return nil, fmt.Errorf("kek: key is not base64url: %w", err)
	}
	return New(raw)
}

// Load reads the KEK file at path. It refuses a file that others can read.
func Load(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("kek: %s is a directory", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("kek: %s has mode %04o; a key-encryption key must not be readable by group or others (chmod 600)", path, fi.Mode().Perm())
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("kek: %w", err)
	}
	k, err := Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// Create makes a new KEK in a new file at path (mode 0600). It refuses a
// path where a file already is (atomicfile.ErrExists): overwriting a KEK
// would lose every key sealed under it.
func Create(path string) (*Key, error) {
	key, raw, err := Generate()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Create(path, Encode(raw), FileMode); err != nil {
		return nil, fmt.Errorf("kek: create %s: %w", path, err)
	}
	return key, nil
}

// LoadOrCreate loads the KEK at path, or creates it (mode 0600) when no
// file is there; created tells which.
func LoadOrCreate(path string) (k *Key, created bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		key, err := Create(path)
		return key, err == nil, err
	}
	k, err = Load(path)
	return k, false, err
}
