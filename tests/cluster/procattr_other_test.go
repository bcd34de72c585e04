//go:build !race && !linux

package cluster_test

import "os/exec"

// dieWithParent has no portable form outside Linux; cleanup kills nodes.
func dieWithParent(*exec.Cmd) {}
