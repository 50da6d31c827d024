//go:build !linux

package main

import (
	"fmt"
	"syscall"
	"time"
)

func childAttr() *syscall.SysProcAttr { return nil }

// threadCPU elsewhere is the whole process's CPU time: the bare figures
// then include the load's other goroutines.
func threadCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
