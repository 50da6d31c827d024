// Package cliflag parses a command's flags wherever they stand among its
// positional arguments ("sync URL --pin X", "policy set FILE --token-file
// T"), as people type them; the standard flag package stops at the first
// positional one.
package cliflag

import "flag"

// Parse parses args into fs and returns the positional arguments in order.
// "--" ends the flags: everything after it is positional. Errors are fs's
// own (flag.ErrHelp for -h).
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
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
