// Package cliflag is how the three programs (issuer, verifier, attester)
// read their command lines, so that they behave alike: commands dispatched
// by Program ("PROG help CMD" is "PROG CMD --help", unknown commands named
// as unknown, --version), flags parsed wherever they stand among the
// positional arguments ("sync URL --pin X"), as people type them, and
// help and errors that spell flags the way the help does, --name.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/healthcode/healthcode/internal/clip"
	"github.com/healthcode/healthcode/internal/version"
)

// Exit statuses shared by the programs: 0 success (a valid token for the
// verifier), 1 failure, 2 a bad command line.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Program is a command with subcommands.
type Program struct {
	Name  string // "issuer"
	Usage string // the top-level help
	// Commands run a subcommand with the arguments after its name and
	// return the exit status. Each must answer --help with its own help on
	// stdout and status 0: "PROG help CMD" runs it so.
	Commands       map[string]func(args []string) int
	Stdout, Stderr io.Writer
}

// Run dispatches args (without the program name).
func (p Program) Run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(p.Stderr, p.Usage)
		return ExitUsage
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		switch len(args) {
		case 1:
			fmt.Fprint(p.Stdout, p.Usage)
			return ExitOK
		case 2:
			cmd, ok := p.Commands[args[1]]
			if !ok {
				fmt.Fprintf(p.Stderr, "%s help: unknown command %q\nrun '%s help' for the commands\n", p.Name, clip.String(args[1], 32), p.Name)
				return ExitUsage
			}
			return cmd([]string{"--help"})
		}
		fmt.Fprintf(p.Stderr, "%s help: want at most one command, got %d arguments\n", p.Name, len(args)-1)
		return ExitUsage
	case "--version", "-version":
		fmt.Fprintln(p.Stdout, version.String(p.Name))
		return ExitOK
	}
	cmd, ok := p.Commands[args[0]]
	if !ok {
		return Unknown(p.Stderr, p.Name, args[0])
	}
	return cmd(args[1:])
}

// Unknown reports an unknown (sub)command: "PROG: unknown command "X"".
// prefix is what stands before it ("issuer admin").
func Unknown(stderr io.Writer, prefix, name string) int {
	fmt.Fprintf(stderr, "%s: unknown command %q\nrun '%s help' for the commands\n", prefix, clip.String(name, 32), prefix)
	return ExitUsage
}

// helpFlag is --help (and -h) on every FlagSet made here: a flag of our
// own, so the flag package never prints its single-dash usage itself.
type helpFlag struct {
	set  bool
	out  io.Writer
	text func() string
}

func (h *helpFlag) String() string   { return "false" }
func (h *helpFlag) IsBoolFlag() bool { return true }
func (h *helpFlag) Set(string) error { h.set = true; return nil }

// NewFlagSet makes a command's flag set. Errors are returned, never
// printed; --help prints "Usage: SYNOPSIS" and the flags (Defaults) to
// help, and Parse then returns flag.ErrHelp.
func NewFlagSet(name, synopsis string, help io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	text := func() string {
		s := "Usage: " + synopsis + "\n"
		if d := Defaults(fs); d != "" {
			s += "\nFlags:\n" + d
		}
		return s
	}
	return withHelp(fs, help, text)
}

// NewFlagSetHelp is NewFlagSet for a command whose help is written out in
// full: --help prints text as it is.
func NewFlagSetHelp(name, text string, help io.Writer) *flag.FlagSet {
	return withHelp(flag.NewFlagSet(name, flag.ContinueOnError), help, func() string { return text })
}

func withHelp(fs *flag.FlagSet, out io.Writer, text func() string) *flag.FlagSet {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	h := &helpFlag{out: out, text: text}
	fs.Var(h, "help", "print this help")
	fs.Var(h, "h", "print this help")
	return fs
}

// Defaults lists fs's flags in the programs' --flag style, one a line:
//
//	--data DIR          data directory (default ./data)
//
// The value's name comes from a `quoted` word in the flag's usage, as with
// flag.PrintDefaults.
func Defaults(fs *flag.FlagSet) string {
	type row struct{ left, right string }
	var rows []row
	width := 0
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(*helpFlag); ok {
			return
		}
		name, usage := flag.UnquoteUsage(f)
		left := "--" + f.Name
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !bf.IsBoolFlag() {
			if name == strings.ToLower(name) { // a type name, not a `NAME`
				name = strings.ToUpper(name)
			}
			left += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			usage += " (default " + f.DefValue + ")"
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, r.left, r.right)
	}
	return b.String()
}

// Parse parses args into fs and returns the positional arguments in order.
// "--" ends the flags: everything after it is positional. --help (on a
// FlagSet from NewFlagSet) prints the help and returns flag.ErrHelp; a
// plain flag.FlagSet's -h returns flag.ErrHelp too. Other errors name
// flags as --name.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, Explain(err)
		}
		if f := fs.Lookup("help"); f != nil {
			if h, ok := f.Value.(*helpFlag); ok && h.set {
				h.set = false
				fmt.Fprint(h.out, h.text())
				return nil, flag.ErrHelp
			}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

var (
	notDefined = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	needsValue = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	badValue   = regexp.MustCompile(`^invalid (?:boolean )?value (".*") for (?:flag )?-+([^:]*): (.*)$`)
)

// Explain rewrites the flag package's messages ("flag provided but not
// defined: -nope") in the style of the help ("unknown flag --nope"), for
// a caller of flag.FlagSet.Parse itself.
func Explain(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	if m := notDefined.FindStringSubmatch(msg); m != nil {
		return errors.New("unknown flag --" + clip.String(m[1], 32))
	}
	if m := needsValue.FindStringSubmatch(msg); m != nil {
		return errors.New("--" + m[1] + " needs a value")
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("invalid value %s for --%s: %s", clip.String(m[1], 40), m[2], m[3])
	}
	return err
}
