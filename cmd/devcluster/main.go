// Command devcluster starts and stops a local issuer cluster on 127.0.0.1
// for development (make cluster, make cluster-down): 3 etcd members, a Redis
// Cluster of 3 masters with a replica each (AOF, appendfsync always), and 3
// issuer replicas on them, each server in its own directory under the
// cluster's data directory with its pid file and log. The servers run
// detached and outlive the command; `down` stops them.
//
// internal/testcluster starts the same servers for tests and stops them
// with the test; this command keeps its own few lines of that knowledge
// (flags, readiness polls, SIGTERM then SIGKILL) because its servers must
// outlive it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

const usage = `devcluster: a local issuer cluster on 127.0.0.1 (make cluster, make cluster-down)

Usage:
  devcluster up   [--dir DIR] [--issuer BIN]   start 3 etcd members, a 3+3 Redis Cluster and 3 issuer
                                              replicas under DIR, wait until all are ready, print the
                                              replicas' URLs and return (they keep running)
  devcluster down [--dir DIR] [--clean]       stop everything up started (SIGTERM, then SIGKILL after
                                              10 s), check that no process is left; --clean also
                                              deletes DIR

DIR is ./cluster-data by default. up reuses the ports recorded in DIR/cluster.json, so a
cluster stopped with down starts again on its data.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, rest := args[0], args[1:]
	flags := flag.NewFlagSet("devcluster "+cmd, flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("dir", "./cluster-data", "the cluster's data `DIR`")
	var issuerBin *string
	var clean *bool
	switch cmd {
	case "up":
		issuerBin = flags.String("issuer", "bin/issuer", "the issuer program, `BIN`")
	case "down":
		clean = flags.Bool("clean", false, "delete DIR once everything is stopped")
	default:
		fmt.Fprintf(stderr, "devcluster: unknown command %q (want up or down)\n", cmd)
		return 2
	}
	if err := flags.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() != 0 {
		fmt.Fprintf(stderr, "devcluster %s takes no arguments, got %q\n", cmd, flags.Arg(0))
		return 2
	}
	if _, err := os.Stat(*dir); cmd == "down" && errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stdout, "devcluster: no cluster in %s\n", *dir)
		return 0
	}
	base, err := dataDir(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "devcluster: %v\n", err)
		return 1
	}
	if cmd == "up" {
		err = up(ctx, base, *issuerBin, stdout)
	} else {
		err = down(base, *clean, stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "devcluster %s: %s\n", cmd, strings.TrimSuffix(err.Error(), "\n"))
		return 1
	}
	return 0
}

// dataDir makes dir and returns it absolute with symlinks resolved, the
// form a server's /proc/PID/cwd has.
func dataDir(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return filepath.EvalSymlinks(abs)
}
