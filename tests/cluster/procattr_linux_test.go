//go:build !race && linux

package cluster_test

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel kill a node process when the test process
// dies, so a test binary killed mid-test (a timeout) leaves no nodes behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
