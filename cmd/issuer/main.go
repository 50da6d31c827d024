// Command issuer runs the Healthcode issuer and administers it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/healthcode/healthcode/internal/cliflag"
	"github.com/healthcode/healthcode/policy"
)

const usage = `issuer: the Healthcode issuer (colour tokens from lab attestations)

Usage:
  issuer serve [--data DIR] [--kek FILE] [--addr HOST:PORT] [--policy FILE] [--demo] [--tls-cert FILE --tls-key FILE]
  issuer fingerprint [--data DIR]        print the bundle key fingerprint verifiers pin
  issuer kek rotate --data DIR --kek OLD --new-kek NEW
                                         reseal the keys under a new key-encryption key (offline)
  issuer policy default                  print the built-in default policy
  issuer policy validate FILE            check a policy file without a server
  issuer admin COMMAND ...               administer a running issuer (issuer admin help)

Start with:  issuer serve --data ./data --demo
`

// exit codes: 0 ok, 1 runtime failure, 2 usage error.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stdout, stderr)
	case "fingerprint":
		err = cmdFingerprint(ctx, args[1:], stdout, stderr)
	case "policy":
		err = cmdPolicy(args[1:], stdout, stderr)
	case "admin":
		err = cmdAdmin(ctx, args[1:], stdin, stdout, stderr)
	case "kek":
		err = cmdKEK(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		err = usagef("unknown command %q", args[0])
	}
	return report(err, stderr)
}

func report(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "issuer: %s\n(run 'issuer help' for usage)\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "issuer: %v\n", err)
		return 1
	}
}

// newFlags makes a FlagSet that reports errors instead of exiting.
func newFlags(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n", help)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args, allowing flags after positional arguments
// ("policy set FILE --token-file X") as users type them; "--" ends flags.
// The positional arguments are left in fs.Args().
func parseFlags(fs *flag.FlagSet, args []string) error {
	pos, err := cliflag.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	// Leave the positional arguments in fs.Args().
	return fs.Parse(append([]string{"--"}, pos...))
}

func cmdPolicy(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("policy needs a subcommand: default or validate FILE")
	}
	switch args[0] {
	case "default":
		_, err := stdout.Write(policy.DefaultJSON())
		return err
	case "validate":
		if len(args) != 2 {
			return usagef("usage: issuer policy validate FILE")
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		p, err := policy.Parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", args[1], err)
		}
		fmt.Fprintf(stdout, "%s: valid policy, version %d\n", args[1], p.Version)
		return nil
	}
	return usagef("unknown policy subcommand %q (want default or validate)", args[0])
}
