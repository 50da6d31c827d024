// Command verifier is what venue staff run: it fetches the issuer's trust
// bundle once (sync, pinned by fingerprint), then checks colour tokens fully
// offline (check for a string, scan for a QR image). It keeps nothing about
// a scan.
//
// Each subcommand is a method on env in its own file and one case in run's
// switch.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/healthcode/healthcode/internal/cliflag"
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/internal/version"
)

// Exit statuses.
const (
	exitValid   = 0 // token valid; other commands: success
	exitInvalid = 1 // token refused, or the command failed
	exitUsage   = 2 // bad command line
)

const mainUsage = `verifier checks Healthcode colour tokens offline.

Usage:
  verifier sync URL --pin FINGERPRINT --bundle FILE [--pin-qr IMAGE] [--config FILE] [--timeout DURATION]
  verifier check --bundle FILE [--json] [--at TIME] [--pin FINGERPRINT] [--config FILE] TOKEN|-
  verifier scan  --bundle FILE [--json] [--at TIME] [--pin FINGERPRINT] [--config FILE] IMAGE
  verifier serve --bundle FILE [--addr 127.0.0.1:8088] [--pin FINGERPRINT] [--config FILE]
  verifier help [COMMAND]

Set up once, with the fingerprint the issuer's administrator gave you out of
band (or a photo of the issuer's pin poster, --pin-qr poster.png); sync
keeps the pin in the verifier's configuration, apart from the bundle:
  verifier sync https://issuer.example --pin sha256:3f1c... --bundle bundle.jws

Sync again whenever the bundle turns stale (the pin is remembered):
  verifier sync https://issuer.example --bundle bundle.jws

Then, at the door, with no network:
  verifier check --bundle bundle.jws eyJhbGciOiJFZERTQSIs...
  verifier scan  --bundle bundle.jws photo-of-phone.png

Exit status: 0 valid (or success), 1 invalid (or failure), 2 usage error.
Run 'verifier help COMMAND' or 'verifier COMMAND --help' for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// env is what a command may touch besides its arguments. Tests build one
// with a fixed clock.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	now            func() time.Time
	configDir      func() (string, error) // where the configuration lives by default
}

// run is main without the process: tests call it directly.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return env{stdin: stdin, stdout: stdout, stderr: stderr, now: time.Now, configDir: os.UserConfigDir}.run(args)
}

func (e env) run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, mainUsage)
		return exitUsage
	}
	switch args[0] {
	case "sync":
		return e.sync(args[1:])
	case "check":
		return e.check(args[1:])
	case "scan":
		return e.scan(args[1:])
	case "serve":
		return e.serve(args[1:])
	case "--version":
		fmt.Fprintln(e.stdout, version.String("verifier"))
		return exitValid
	case "help", "-h", "-help", "--help":
		return e.help(args[1:])
	default:
		fmt.Fprintf(e.stderr, "verifier: unknown command %q (commands: sync, check, scan, serve, help)\nrun 'verifier help' for usage\n", clipArg(args[0]))
		return exitUsage
	}
}

// usages names every command's help text, for 'verifier help COMMAND'.
var usages = map[string]string{
	"sync":  syncUsage,
	"check": checkUsage,
	"scan":  scanUsage,
	"serve": serveUsage,
}

func (e env) help(args []string) int {
	switch {
	case len(args) == 0:
		fmt.Fprint(e.stdout, mainUsage)
		return exitValid
	case len(args) > 1:
		fmt.Fprintf(e.stderr, "verifier help: want at most one command, got %d arguments\n", len(args))
		return exitUsage
	}
	u, ok := usages[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "verifier help: unknown command %q (commands: sync, check, scan, serve)\n", clipArg(args[0]))
		return exitUsage
	}
	fmt.Fprint(e.stdout, u)
	return exitValid
}

// cmd carries one command's name and help for uniform messages.
type cmd struct {
	env
	name, usage string
}

// usageErr, fail and warn escape what they print: messages quote servers,
// files and tokens, and none of them may move the terminal's cursor.
func (c cmd) usageErr(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "verifier %s: %s\nrun 'verifier %s --help' for usage\n", c.name, clip.Printable(fmt.Sprintf(format, a...)), c.name)
	return exitUsage
}

func (c cmd) fail(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "verifier %s: %s\n", c.name, clip.Printable(fmt.Sprintf(format, a...)))
	return exitInvalid
}

func (c cmd) warn(format string, a ...any) {
	fmt.Fprintf(c.stderr, "verifier %s: warning: %s\n", c.name, clip.Printable(fmt.Sprintf(format, a...)))
}

// parse parses flags that may come before, between or after the positional
// arguments ("sync URL --pin X" reads naturally), and returns the
// positional ones. done is true when the command must stop with code.
func (c cmd) parse(fs *flag.FlagSet, args []string) (pos []string, code int, done bool) {
	fs.SetOutput(io.Discard) // we print our own usage and messages
	pos, err := cliflag.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(c.stdout, c.usage)
		return nil, exitValid, true
	}
	if err != nil {
		return nil, c.usageErr("%s", flagError(err)), true
	}
	return pos, 0, false
}

// flagError restates the flag package's messages in the --flag style the
// help uses ("flag provided but not defined: -x" says "-x").
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + clipArg(strings.TrimPrefix(name, "-"))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return "--" + clipArg(strings.TrimPrefix(name, "-")) + " needs a value"
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		// invalid value "x" for flag -timeout: parse error
		return "invalid value " + strings.Replace(clip.Printable(rest), " for flag -", " for --", 1)
	}
	return clip.Printable(msg)
}

// at parses an --at value, or returns the clock's time when it is empty.
func (c cmd) at(s string) (time.Time, error) {
	if s == "" {
		return c.now(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--at %q is not an RFC 3339 time (like 2026-11-20T12:00:00Z)", clipArg(s))
	}
	return t, nil
}

// clipArg bounds user text quoted back in a message, so a token pasted in
// the wrong place is not repeated whole, and escapes what a terminal would
// act on.
func clipArg(s string) string { return clip.String(s, 24) }
