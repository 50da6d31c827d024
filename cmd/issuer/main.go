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
	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/policy"
)

const usage = `issuer: the Healthcode issuer (colour tokens from lab attestations)

Usage:
  issuer serve [--data DIR] [--kek FILE] [--addr HOST:PORT] [--policy FILE] [--demo] [--tls-cert FILE --tls-key FILE]
  issuer serve --etcd ENDPOINTS --redis ADDRS --kek FILE [--replica-id ID] [flags]
                                         one of several stateless replicas on etcd and a Redis Cluster
  issuer fingerprint [--data DIR] [--qr FILE.png]
                                         print the pin venues use; --qr also writes it as a poster QR
  issuer kek new FILE [--data DIR]       make a key-encryption key file for a new cluster of replicas
  issuer kek rotate --data DIR --kek OLD --new-kek NEW
                                         reseal the keys under a new key-encryption key (offline)
  issuer migrate --data DIR --kek FILE --etcd ENDPOINTS [etcd TLS and auth flags]
                                         copy a bbolt issuer's configuration to a cluster's etcd (offline)
  issuer policy default                  print the built-in default policy
  issuer policy validate FILE            check a policy file without a server
  issuer admin COMMAND ...               administer a running issuer (issuer admin help)
  issuer help [COMMAND]                  this help, or a command's
  issuer --version                       the build: module version and VCS revision

Start with:  issuer serve --data ./data --demo
`

// exit codes: 0 ok, 1 runtime failure, 2 usage error.
type usageError struct {
	msg string
	in  string // the command it is about ("admin attesters"), or ""
}

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{msg: fmt.Sprintf(format, a...)} }

// usagefIn is a usage error of the command in ("admin"), so that the
// message names it: "issuer admin: unknown command "inventry"".
func usagefIn(in, format string, a ...any) error {
	return usageError{msg: fmt.Sprintf(format, a...), in: in}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := func(f func(args []string) error) func([]string) int {
		return func(args []string) int { return report(f(args), stderr) }
	}
	return cliflag.Program{Name: "issuer", Usage: usage, Stdout: stdout, Stderr: stderr, Commands: map[string]func([]string) int{
		"serve":       cmd(func(a []string) error { return cmdServe(ctx, a, stdout, stderr) }),
		"fingerprint": cmd(func(a []string) error { return cmdFingerprint(ctx, a, stdout, stderr) }),
		"policy":      cmd(func(a []string) error { return cmdPolicy(a, stdout, stderr) }),
		"admin":       cmd(func(a []string) error { return cmdAdmin(ctx, a, stdin, stdout, stderr) }),
		"kek":         cmd(func(a []string) error { return cmdKEK(ctx, a, stdout, stderr) }),
		"migrate":     cmd(func(a []string) error { return cmdMigrate(ctx, a, stdout, stderr) }),
	}}.Run(args)
}

func report(err error, stderr io.Writer) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if ue.in != "" {
			fmt.Fprintf(stderr, "issuer %s: %s\nrun 'issuer %s help' for usage\n", ue.in, ue.msg, ue.in)
			return 2
		}
		fmt.Fprintf(stderr, "issuer: %s\n(run 'issuer help' for usage)\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(stderr, "issuer: %v\n", err)
		return 1
	}
}

// newFlags makes a command's FlagSet: errors are returned, not printed,
// and --help prints "Usage: SYNOPSIS" and the flags in --flag style to help
// (stdout: asked-for help is no error).
func newFlags(name, synopsis string, help io.Writer) *flag.FlagSet {
	return cliflag.NewFlagSet(name, synopsis, help)
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
		return usageError{msg: err.Error()}
	}
	// Leave the positional arguments in fs.Args().
	return fs.Parse(append([]string{"--"}, pos...))
}

const policyUsage = `Usage:
  issuer migrate --data DIR --kek FILE --etcd ENDPOINTS [etcd TLS and auth flags]
                                         copy a bbolt issuer's configuration to a cluster's etcd (offline)
  issuer policy default          print the built-in default policy
  issuer policy validate FILE    check a policy file without a server
`

func cmdPolicy(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("policy needs a command: default or validate FILE")
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return nil
	case "default":
		if len(args) != 1 {
			return usagef("usage: issuer policy default")
		}
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
	return usagefIn("policy", "unknown command %q (want default or validate FILE)", clip.String(args[0], 32))
}
