package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// kvmesh node refuses bad flags with exit code 2 and a message naming the
// flag, before starting anything (tests/cluster runs real nodes).
func TestNodeBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "--provider", "consul", "--members", "127.0.0.1:47101"}, `provider "consul"`},
		{[]string{"node", "--listen", "127.0.0.1:47101"}, "needs --members"},
		{[]string{"node", "--provider", "etcd"}, "needs --etcd"},
		{[]string{"node", "--listen", "nohost", "--members", "127.0.0.1:47101"}, `listen "nohost"`},
		{[]string{"node", "--members", "127.0.0.1:47101", "--tls-cert", "c.pem"}, "got 1 of 3"},
		{[]string{"node", "--members", "127.0.0.1:47101", "extra"}, "unknown command"},
		{[]string{"node", "--members", "127.0.0.1:47101", "--metrics-listen", "nohost"}, `--metrics-listen: telemetry: metrics listener "nohost"`},
	} {
		code, _, stderr := runCLI(tc.args...)
		assert.Equal(t, exitBadInput, code, "%v", tc.args)
		assert.Contains(t, stderr, tc.want, "%v", tc.args)
	}
}
