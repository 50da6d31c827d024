package cliflag

import (
	"errors"
	"flag"
	"io"
	"slices"
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
	if _, err := Parse(fs, []string{"URL", "--nope"}); err == nil || err.Error() != "flag provided but not defined: -nope" {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, err := Parse(fs, []string{"URL", "-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}
