// Command attester is what a test lab or clinic runs: it makes the lab's
// Ed25519 key and signs minimal attestations ("negative test sampled at T")
// for residents, as a string and optionally as a QR PNG.
package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/healthcode/healthcode/attestation"
	"github.com/healthcode/healthcode/internal/cliflag"
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/internal/keyfile"
	"github.com/healthcode/healthcode/qr"
)

// Exit statuses.
const (
	exitOK      = 0
	exitRuntime = 1 // key file, output file
	exitUsage   = 2 // bad command line
)

// Defaults of sign.
const (
	defaultTTL = 72 * time.Hour
	qrSize     = 512
	jtiBytes   = 16 // 128 random bits: collisions are not a concern
)

var mainUsage = `attester signs minimal health attestations for Healthcode.

Usage:
  attester keygen --out FILE [--force]
  attester pubkey --key FILE
  attester sign   --key FILE --id ATTESTER_ID --kind KIND [--at TIME] [--ttl DURATION]
                  [--hint TEXT] [--jti ID] [--qr FILE.png]
  attester help [COMMAND]
  attester --version

Kinds: ` + attestation.KindNames() + `

Examples:
  # once: make the lab's key and have an administrator register it
  attester keygen --out lab.key
  issuer admin attesters add --id city-lab-1 --key "$(attester pubkey --key lab.key)"

  # per resident: a negative test sampled this morning, as a string and a QR
  attester sign --key lab.key --id city-lab-1 --kind test-negative \
      --at 2026-03-01T09:30:00+01:00 --qr resident.png

Exit status: 0 success, 1 runtime error (key or output file), 2 usage error.
Run 'attester help COMMAND' for a command's flags.
`

var keygenUsage = `Usage: attester keygen --out FILE [--force]

Generates an Ed25519 key, writes the private key to FILE (PEM PKCS#8, mode
0600) and prints the public key (base64url) on stdout: the string an
administrator passes to 'issuer admin attesters add --id ID --key PUBKEY'.

Flags:
  --out FILE   where to write the private key (required)
  --force      replace FILE if it exists (the old key is lost)

Example:
  attester keygen --out lab.key
`

var pubkeyUsage = `Usage: attester pubkey --key FILE

Prints the public key (base64url) of an existing private key file.

Flags:
  --key FILE   private key file made by 'attester keygen' (required)

Example:
  attester pubkey --key lab.key
`

var signUsage = `Usage: attester sign --key FILE --id ATTESTER_ID --kind KIND [flags]

Signs an attestation and prints it (a compact JWS) on stdout.

Flags:
  --key FILE        private key file made by 'attester keygen' (required)
  --id ATTESTER_ID  the id the issuer registered this key under (required)
  --kind KIND       what is attested (required), one of:
                    ` + attestation.KindNames() + `
  --at TIME         when the event happened, RFC 3339 (default: now);
                    must not be in the future
  --ttl DURATION    how long the resident may redeem it, counted from now,
                    not from --at (default: 72h)
  --hint TEXT       holder hint, e.g. initials and birth year (at most ` + fmt.Sprint(attestation.MaxHintLen) + ` bytes)
  --jti ID          attestation id (default: 128 random bits, base64url)
  --qr FILE.png     also write the attestation as a ` + fmt.Sprint(qrSize) + `px QR code PNG
  --now TIME        for tests only: the current time, RFC 3339

Examples:
  attester sign --key lab.key --id city-lab-1 --kind test-negative
  attester sign --key lab.key --id city-lab-1 --kind vaccination \
      --at 2026-02-20T14:00:00Z --ttl 168h --hint AB1980 --qr resident.png
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process: tests call it directly. stdin is unused
// today; it is in the signature so commands can grow to read it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := func(f func([]string, io.Writer, io.Writer) int) func([]string) int {
		return func(args []string) int { return f(args, stdout, stderr) }
	}
	return cliflag.Program{Name: "attester", Usage: mainUsage, Stdout: stdout, Stderr: stderr, Commands: map[string]func([]string) int{
		"keygen": cmd(keygen),
		"pubkey": cmd(pubkey),
		"sign":   cmd(sign),
	}}.Run(args)
}

// cli carries one command's name and output streams, for uniform messages.
type cli struct {
	name           string
	usage          string
	stdout, stderr io.Writer
}

func (c cli) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "attester %s: %s\nrun 'attester %s --help' for usage\n", c.name, fmt.Sprintf(format, a...), c.name)
	return exitUsage
}

func (c cli) fail(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "attester %s: %s\n", c.name, fmt.Sprintf(format, a...))
	return exitRuntime
}

func (c cli) warn(format string, a ...any) {
	fmt.Fprintf(c.stderr, "attester %s: warning: %s\n", c.name, fmt.Sprintf(format, a...))
}

// flags is the command's flag set; --help prints its usage.
func (c cli) flags() *flag.FlagSet { return cliflag.NewFlagSetHelp(c.name, c.usage, c.stdout) }

// parse parses fs and reports the set flags. done is true when the command
// must stop with code (help printed, or a usage error).
func (c cli) parse(fs *flag.FlagSet, args []string) (set map[string]bool, code int, done bool) {
	pos, err := cliflag.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil, exitOK, true
	}
	if err != nil {
		return nil, c.usageErr("%v", err), true
	}
	if len(pos) > 0 {
		return nil, c.usageErr("unexpected argument %q (flags take the form --name value)", clip.String(pos[0], 40)), true
	}
	set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set, 0, false
}

func keygen(args []string, stdout, stderr io.Writer) int {
	c := cli{name: "keygen", usage: keygenUsage, stdout: stdout, stderr: stderr}
	fs := c.flags()
	out := fs.String("out", "", "")
	force := fs.Bool("force", false, "")
	if _, code, done := c.parse(fs, args); done {
		return code
	}
	if *out == "" {
		return c.usageErr("--out is required (where to write the private key)")
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return c.fail("generate key: %v", err)
	}
	if err := keyfile.Write(*out, key, *force); err != nil {
		if errors.Is(err, keyfile.ErrExists) {
			return c.fail("--out %s already exists; refusing to overwrite it (pass --force to replace it; the old key is then lost)", *out)
		}
		return c.fail("--out: %v", err)
	}
	enc := keyfile.EncodePublic(pub)
	fmt.Fprintln(stdout, enc)
	fmt.Fprintf(stderr, "attester keygen: wrote private key to %s (mode 0600); register it with: issuer admin attesters add --id ATTESTER_ID --key %s\n", *out, enc)
	return exitOK
}

func pubkey(args []string, stdout, stderr io.Writer) int {
	c := cli{name: "pubkey", usage: pubkeyUsage, stdout: stdout, stderr: stderr}
	fs := c.flags()
	path := fs.String("key", "", "")
	if _, code, done := c.parse(fs, args); done {
		return code
	}
	if *path == "" {
		return c.usageErr("--key is required (the private key file made by 'attester keygen')")
	}
	key, code, ok := c.readKey(*path)
	if !ok {
		return code
	}
	fmt.Fprintln(stdout, keyfile.EncodePublic(key.Public().(ed25519.PublicKey)))
	return exitOK
}

// readKey loads the key and warns, without refusing, when others can read
// it: refusing would stop a lab's work over a fixable mistake.
func (c cli) readKey(path string) (ed25519.PrivateKey, int, bool) {
	key, perm, err := keyfile.ReadWithMode(path)
	if err != nil {
		return nil, c.fail("--key: %v", err), false
	}
	if keyfile.TooOpen(perm) {
		c.warn("key file %s has mode %04o; it should be 0600 (run: chmod 600 %s)", path, perm, path)
	}
	return key, 0, true
}

func sign(args []string, stdout, stderr io.Writer) int {
	c := cli{name: "sign", usage: signUsage, stdout: stdout, stderr: stderr}
	fs := c.flags()
	keyPath := fs.String("key", "", "")
	id := fs.String("id", "", "")
	kind := fs.String("kind", "", "")
	atFlag := fs.String("at", "", "")
	ttlFlag := fs.String("ttl", defaultTTL.String(), "")
	hint := fs.String("hint", "", "")
	jti := fs.String("jti", "", "")
	qrPath := fs.String("qr", "", "")
	nowFlag := fs.String("now", "", "")
	set, code, done := c.parse(fs, args)
	if done {
		return code
	}

	now := time.Now()
	if set["now"] {
		t, err := time.Parse(time.RFC3339, *nowFlag)
		if err != nil {
			return c.usageErr("--now %q is not an RFC 3339 time (e.g. 2026-03-01T09:30:00Z)", clip.String(*nowFlag, 40))
		}
		now = t
	}

	switch {
	case *keyPath == "":
		return c.usageErr("--key is required (the private key file made by 'attester keygen')")
	case *id == "":
		return c.usageErr("--id is required (the attester id the issuer registered this key under)")
	case len(*id) > attestation.MaxAttesterLen:
		return c.usageErr("--id is longer than %d bytes", attestation.MaxAttesterLen)
	case !printableASCII(*id):
		return c.usageErr("--id may hold only printable ASCII characters without spaces")
	case *kind == "":
		return c.usageErr("--kind is required; one of: %s", attestation.KindNames())
	case !attestation.Kind(*kind).Valid():
		return c.usageErr("--kind %q is not one of: %s", clip.String(*kind, 40), attestation.KindNames())
	}

	at := now
	if set["at"] {
		t, err := time.Parse(time.RFC3339, *atFlag)
		if err != nil {
			return c.usageErr("--at %q is not an RFC 3339 time (e.g. 2026-03-01T09:30:00Z)", clip.String(*atFlag, 40))
		}
		at = t
	}
	// Unix 0 means "no event time" on the wire.
	if at.Unix() <= 0 {
		return c.usageErr("--at %s is not after 1970-01-01T00:00:00Z", at.Format(time.RFC3339))
	}
	if at.After(now) {
		return c.usageErr("--at %s is in the future (now is %s)", at.Format(time.RFC3339), now.Format(time.RFC3339))
	}

	ttl, err := time.ParseDuration(*ttlFlag)
	if err != nil {
		return c.usageErr("--ttl %q is not a duration (e.g. 72h, 90m)", clip.String(*ttlFlag, 40))
	}
	// Claims are whole seconds; under a second exp could round onto at.
	if ttl < time.Second {
		return c.usageErr("--ttl must be at least 1s, got %s", ttl)
	}

	// The hint is personal: messages describe it, never echo it.
	if set["hint"] {
		switch {
		case *hint == "":
			return c.usageErr("--hint is empty; omit it for no hint")
		case len(*hint) > attestation.MaxHintLen:
			return c.usageErr("--hint is %d bytes; at most %d are allowed", len(*hint), attestation.MaxHintLen)
		case !utf8.ValidString(*hint):
			return c.usageErr("--hint is not valid UTF-8")
		case strings.ContainsFunc(*hint, unicode.IsControl):
			return c.usageErr("--hint contains a control character")
		}
	}

	if set["jti"] {
		switch {
		case *jti == "":
			return c.usageErr("--jti is empty; omit it for a random id")
		case len(*jti) > attestation.MaxIDLen:
			return c.usageErr("--jti is longer than %d bytes", attestation.MaxIDLen)
		case !printableASCII(*jti):
			return c.usageErr("--jti may hold only printable ASCII characters without spaces")
		}
	} else {
		b := make([]byte, jtiBytes)
		rand.Read(b) // never fails (crypto/rand since Go 1.24)
		*jti = base64.RawURLEncoding.EncodeToString(b)
	}

	if set["qr"] && *qrPath == "" {
		return c.usageErr("--qr is empty; give the PNG file to write")
	}

	key, code, ok := c.readKey(*keyPath)
	if !ok {
		return code
	}
	att, err := attestation.Sign(key, attestation.Claims{
		Attester: *id,
		Kind:     attestation.Kind(*kind),
		At:       at.Unix(),
		Expires:  now.Add(ttl).Unix(),
		ID:       *jti,
		Hint:     *hint,
	})
	if err != nil {
		return c.fail("cannot sign: %v", err)
	}

	// The QR is written before the string is printed, so a failure leaves
	// nothing half-done on stdout.
	if *qrPath != "" {
		png, err := qr.PNG(att, qrSize)
		if err != nil {
			return c.fail("--qr: %v", err)
		}
		// 0600: the code is the resident's to hand over, not the machine's other users'.
		if err := os.WriteFile(*qrPath, png, 0o600); err != nil {
			return c.fail("--qr: %v", err)
		}
		// WriteFile keeps the mode of a file it overwrites.
		if err := os.Chmod(*qrPath, 0o600); err != nil {
			return c.fail("--qr: %v", err)
		}
	}
	fmt.Fprintln(stdout, att)
	return exitOK
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
