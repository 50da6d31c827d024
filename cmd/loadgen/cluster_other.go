//go:build !linux

package main

import (
	"context"
	"errors"
	"io"
)

// runCluster needs Linux: the servers are started by internal/testcluster
// and measured through /proc.
func runCluster(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("cluster: runs on Linux only (/proc, and the test cluster's process handling)")
}
