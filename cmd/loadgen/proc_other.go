//go:build !linux

package main

import "syscall"

func childAttr() *syscall.SysProcAttr { return nil }

// Elsewhere the whole process is measured.
const rusageThread = syscall.RUSAGE_SELF
