package cliflag

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		args    []string
		pin     string
		verbose bool
		pos     []string
	}{
		{[]string{"URL", "--pin", "P"}, "P", false, []string{"URL"}},
		{[]string{"--pin", "P", "URL"}, "P", false, []string{"URL"}},
		{[]string{"A", "-v", "B", "--pin=P", "C"}, "P", true, []string{"A", "B", "C"}},
		{[]string{"A", "--", "--pin", "-v"}, "", false, []string{"A", "--pin", "-v"}},
		{nil, "", false, nil},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		pin := fs.String("pin", "", "")
		v := fs.Bool("v", false, "")
		pos, err := Parse(fs, c.args)
		if err != nil || *pin != c.pin || *v != c.verbose || !slices.Equal(pos, c.pos) {
			t.Errorf("%q: pin %q v %v pos %q err %v; want %q %v %q", c.args, *pin, *v, pos, err, c.pin, c.verbose, c.pos)
		}
	}
}

func TestParseErrors(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("pin", "", "")
	if _, err := Parse(fs, []string{"URL", "--nope"}); err == nil || err.Error() != "unknown flag --nope" {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, err := Parse(fs, []string{"URL", "-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

func TestErrorsSpellFlagsWithTwoDashes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nope"}, "unknown flag --nope"},
		{[]string{"-nope"}, "unknown flag --nope"},
		{[]string{"--pin"}, "--pin needs a value"},
		{[]string{"--n", "x"}, `invalid value "x" for --n: parse error`},
		{[]string{"--v=maybe"}, `invalid value "maybe" for --v: parse error`},
	} {
		fs := NewFlagSet("t", "t [flags]", io.Discard)
		fs.String("pin", "", "")
		fs.Int("n", 0, "")
		fs.Bool("v", false, "")
		if _, err := Parse(fs, c.args); err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}

func TestHelpInTheProgramsStyle(t *testing.T) {
	var out strings.Builder
	fs := NewFlagSet("serve", "issuer serve [flags]", &out)
	fs.String("data", "./data", "data `DIR`ectory")
	fs.Bool("demo", false, "register a demo attester")
	fs.Int("redeem-rate", 30, "redemptions per client per minute")
	for _, args := range [][]string{{"--help"}, {"-h"}, {"x", "--help"}} {
		out.Reset()
		if _, err := Parse(fs, args); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%q: %v", args, err)
		}
		want := "Usage: issuer serve [flags]\n\nFlags:\n" +
			"  --data DIR         data DIRectory (default ./data)\n" +
			"  --demo             register a demo attester\n" +
			"  --redeem-rate INT  redemptions per client per minute (default 30)\n"
		if out.String() != want {
			t.Fatalf("%q printed\n%s\nwant\n%s", args, out.String(), want)
		}
	}
	// After help, the set parses normally again.
	if pos, err := Parse(fs, []string{"a"}); err != nil || !slices.Equal(pos, []string{"a"}) {
		t.Fatalf("after help: %q %v", pos, err)
	}
	out.Reset()
	fs = NewFlagSetHelp("sign", "Usage: attester sign ...\n", &out)
	if _, err := Parse(fs, []string{"--help"}); !errors.Is(err, flag.ErrHelp) || out.String() != "Usage: attester sign ...\n" {
		t.Fatalf("written-out help: %v %q", err, out.String())
	}
}

func TestProgram(t *testing.T) {
	var ran []string
	var stdout, stderr strings.Builder
	p := Program{Name: "issuer", Usage: "issuer: top usage\n", Stdout: &stdout, Stderr: &stderr,
		Commands: map[string]func([]string) int{
			"serve": func(args []string) int {
				ran = append(ran, strings.Join(append([]string{"serve"}, args...), " "))
				return 7
			},
		}}
	for _, c := range []struct {
		args           []string
		code           int
		stdout, stderr string
		ran            string
	}{
		{nil, 2, "", "issuer: top usage\n", ""},
		{[]string{"help"}, 0, "issuer: top usage\n", "", ""},
		{[]string{"--help"}, 0, "issuer: top usage\n", "", ""},
		{[]string{"help", "serve"}, 7, "", "", "serve --help"},
		{[]string{"serve", "--data", "d"}, 7, "", "", "serve --data d"},
		{[]string{"srve"}, 2, "", "issuer: unknown command \"srve\"\nrun 'issuer help' for the commands\n", ""},
		{[]string{"help", "srve"}, 2, "", "issuer help: unknown command \"srve\"\nrun 'issuer help' for the commands\n", ""},
		{[]string{"help", "a", "b"}, 2, "", "issuer help: want at most one command, got 2 arguments\n", ""},
	} {
		ran, stdout, stderr = nil, strings.Builder{}, strings.Builder{}
		p.Stdout, p.Stderr = &stdout, &stderr
		code := p.Run(c.args)
		if code != c.code || stdout.String() != c.stdout || stderr.String() != c.stderr || strings.Join(ran, ";") != c.ran {
			t.Errorf("%q: exit %d, stdout %q, stderr %q, ran %q; want %d %q %q %q", c.args, code, stdout.String(), stderr.String(), ran, c.code, c.stdout, c.stderr, c.ran)
		}
	}
	stdout.Reset()
	p.Stdout = &stdout
	if code := p.Run([]string{"--version"}); code != 0 || !strings.HasPrefix(stdout.String(), "issuer ") || !strings.Contains(stdout.String(), " revision ") {
		t.Fatalf("--version: %d %q", code, stdout.String())
	}
}
