package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBench(t *testing.T) {
	code, out, errOut := runCLI("bench", "--benchtime", "1x")
	assert.Contains(t, []int{0, 1}, code, "pass or a failed budget, never bad input: %s", errOut)
	for _, want := range []string{"decode write at 32k vs 128 context (contiguous)", "(paged)", "prefill write vs copy()",
		"page pool alloc+free", "decode step, actors vs goroutines", "KV transfer between two nodes vs raw TCP", "<= 1.30", ">= 0.50", ">= 20M pairs/s"} {
		assert.Contains(t, out, want)
	}
	assert.Contains(t, errOut, "kvmesh bench: decode write", "progress on stderr")

	code, out, _ = runCLI("bench", "--benchtime", "1x", "--json")
	assert.Contains(t, []int{0, 1}, code)
	var res []map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, 7)
	for _, r := range res {
		assert.Contains(t, r, "name")
		assert.Contains(t, r, "pass")
	}

	code, _, errOut = runCLI("bench", "--benchtime", "later")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--benchtime")
}
