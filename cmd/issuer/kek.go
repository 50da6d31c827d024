package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/healthcode/healthcode/internal/atomicfile"
	"github.com/healthcode/healthcode/internal/kek"
	"github.com/healthcode/healthcode/issuer/boltstore"
)

const kekUsage = `issuer kek: the key-encryption key that seals the keys in the data directory

Usage:
  issuer kek new FILE [--data DIR]
      make a new key-encryption key in FILE (0600), for a new cluster of
      replicas (a replica never makes one): give every replica a copy and
      back it up apart from etcd. Refuses an existing FILE, and with --data
      a FILE inside DIR.
  issuer kek rotate --data DIR --kek OLD --new-kek NEW
      reseal every key in DIR under NEW (created 0600 when absent), offline:
      stop the issuer first. Afterwards start it with --kek NEW; OLD opens
      only backups of DIR made before the rotation.
`

func cmdKEK(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, kekUsage)
		if len(args) == 0 {
			return usagef("kek needs a subcommand: new or rotate")
		}
		return nil
	}
	switch args[0] {
	case "new":
		return cmdKEKNew(args[1:], stdout)
	case "rotate":
	default:
		return usagef("unknown kek subcommand %q (want new or rotate)", args[0])
	}
	fs := newFlags("kek rotate", "issuer kek rotate --data DIR --kek OLD --new-kek NEW", stdout)
	data := fs.String("data", "./data", "data directory (the issuer must not be running on it)")
	oldFile := fs.String("kek", os.Getenv(kekEnv), "the key-encryption key the keys are sealed under now (default $"+kekEnv+", else DIR.kek)")
	newFile := fs.String("new-kek", "", "the new key-encryption key file; created (0600) when absent")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("kek rotate takes no arguments, got %q", fs.Arg(0))
	}
	if *newFile == "" {
		return usagef("kek rotate needs --new-kek FILE")
	}
	oldPath, err := resolveKEK(*oldFile, *data)
	if err != nil {
		return err
	}
	newPath, err := resolveKEK(*newFile, *data)
	if err != nil {
		return err
	}
	if filepath.Clean(oldPath) == filepath.Clean(newPath) {
		return usagef("--new-kek must be another file than --kek (%s)", oldPath)
	}
	if _, err := os.Stat(filepath.Join(*data, "healthcode.db")); err != nil {
		return fmt.Errorf("no issuer state in %s", *data)
	}
	oldKEK, err := kek.Load(oldPath)
	if err != nil {
		return fmt.Errorf("key-encryption key: %w", err)
	}
	newKEK, created, err := kek.LoadOrCreate(newPath)
	if err != nil {
		return fmt.Errorf("new key-encryption key: %w", err)
	}
	n, err := boltstore.RotateKEK(ctx, *data, boltstore.Options{KEK: oldKEK}, newKEK)
	if err != nil {
		if created {
			// Nothing was sealed under it unless RotateKEK got as far as
			// committing, which only an error after the commit reports;
			// keep the file then.
			if db, oerr := boltstore.Open(*data, boltstore.Options{KEK: newKEK}); oerr == nil {
				db.Close()
			} else {
				os.Remove(newPath)
			}
		}
		return err
	}
	fmt.Fprintf(stdout, "%d keys in %s resealed under %s (KEK id %s).\n", n, *data, newPath, newKEK.ID())
	fmt.Fprintf(stdout, "Start the issuer with --kek %s and back that file up apart from the data directory.\n", newPath)
	fmt.Fprintf(stdout, "%s now opens only backups of %s made before this rotation.\n", oldPath, *data)
	return nil
}

// cmdKEKNew is issuer kek new: a fresh KEK file for a new cluster.
func cmdKEKNew(args []string, stdout io.Writer) error {
	fs := newFlags("kek new", "issuer kek new FILE [--data DIR]", stdout)
	data := fs.String("data", "", "a data directory FILE must lie outside of (optional)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("kek new takes one FILE, got %d arguments", fs.NArg())
	}
	path := fs.Arg(0)
	if *data != "" {
		if _, err := resolveKEK(path, *data); err != nil {
			var ue usageError
			if errors.As(err, &ue) {
				return usagef("%s is inside the data directory %s; keep the key-encryption key apart from the keys it seals", path, *data)
			}
			return err
		}
	}
	k, err := kek.Create(path)
	if errors.Is(err, atomicfile.ErrExists) {
		return fmt.Errorf("%s already exists; a key-encryption key is never overwritten (the keys sealed under it would be lost): choose another FILE", path)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "New key-encryption key in %s (KEK id %s).\n", path, k.ID())
	fmt.Fprintf(stdout, "Give every replica a copy (mode 0600, --kek FILE) and back it up apart from etcd.\n")
	return nil
}
