package main

import "syscall"

// childAttr makes the kernel kill a spawned issuer if loadgen dies first,
// so no server outlives the run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// rusageThread is RUSAGE_THREAD: the calling thread alone.
const rusageThread = 1
