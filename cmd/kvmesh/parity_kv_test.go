package main

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParityKVDType(t *testing.T) {
	for _, tc := range []struct {
		kv, header, tol string
	}{
		{"int8", "kv storage int8 (int8 codes, float32 scales): tolerance 0.35 against outputs_float64", "0.35"},
		{"nf4", "kv storage nf4 (NF4 codes, float32 absmax): tolerance 0.5 against outputs_float64", "0.5"},
		{"bf16", "kv storage bf16 (bfloat16): tolerance 0.35 against outputs_float64", "0.35"},
		{"f16", "kv storage f16 (float16): tolerance 0.04 against outputs_float64", "0.04"},
		{"f64", "kv storage f64 (float64): tolerance 1e-12 against outputs_float64", "1e-12"},
	} {
		t.Run(tc.kv, func(t *testing.T) {
			code, out, stderr := runCLI("parity", "--kv-dtype", tc.kv)
			require.Equal(t, 0, code, stderr)
			assert.Contains(t, out, tc.header)
			assert.Contains(t, out, "36 passed, 0 failed, 5 cases skipped (kv storage "+tc.kv+": tolerance "+tc.tol+" against float64)")
			assert.Regexp(t, `attention_gqa\s+leftpad/prefill3/paged/out\s+\S+\s+ok`, out)
			assert.Regexp(t, `max\|Δ\| `+tc.kv, out)
			assert.Regexp(t, `mamba1_inner\s+skipped: no KV cache`, out)
			assert.NotContains(t, out, "FAIL")
			// Every reported difference is within the printed tolerance.
			tol, err := strconv.ParseFloat(tc.tol, 64)
			require.NoError(t, err)
			diffs := regexp.MustCompile(`(?m)(\d\.\d{3}e[-+]\d+)\s+ok$`).FindAllStringSubmatch(out, -1)
			require.Len(t, diffs, 36)
			for _, d := range diffs {
				x, err := strconv.ParseFloat(d[1], 64)
				require.NoError(t, err)
				assert.LessOrEqual(t, x, tol)
			}
		})
	}
}

func TestParityKVDTypeFailsBeyondTolerance(t *testing.T) {
	code, out, stderr := runCLI("parity", "--kv-dtype", "int8", "--tolkv", "1e-4")
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "kv storage int8 (int8 codes, float32 scales): tolerance 0.0001 against outputs_float64")
	assert.Contains(t, out, "FAIL")
	assert.Contains(t, stderr, "exceed their tolerance")
}

func TestParityKVDTypeBadInput(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown storage":    {[]string{"--kv-dtype", "int4"}, `unknown kv storage "int4" (want one of f64, f32, f16, bf16, int8, nf4)`},
		"empty storage name": {[]string{"--kv-dtype="}, `unknown kv storage ""`},
		"negative tolkv":     {[]string{"--kv-dtype", "int8", "--tolkv", "-1"}, "--tolkv -1 must be positive"},
		"tolkv alone":        {[]string{"--tolkv", "0.5"}, "--tolkv needs --kv-dtype"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := runCLI(append([]string{"parity"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr, tc.want)
			assert.Empty(t, out)
		})
	}
}
