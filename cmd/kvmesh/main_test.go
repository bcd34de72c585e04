package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestParityGoldenFiles(t *testing.T) {
	code, out, stderr := runCLI("parity")
	require.Equal(t, 0, code, stderr)
	for _, c := range []string{"attention_gqa", "mamba1_inner", "mamba1_module", "mamba2_inner", "mamba2_module", "lightning"} {
		assert.Contains(t, out, c)
	}
	assert.Contains(t, out, "nopad/prefill3/paged/out")
	assert.Contains(t, out, "leftpad/step/contiguous/out")
	assert.NotContains(t, out, "FAIL")
	assert.Contains(t, out, " 0 failed")
}

// writeCase writes a golden file, changed by edit, to a temporary file.
func writeCase(t *testing.T, golden string, edit func(map[string]any)) string {
	data, err := parity.Golden("golden/" + golden)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(data, &doc))
	edit(doc)
	out, err := json.Marshal(doc)
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), golden)
	require.NoError(t, os.WriteFile(path, out, 0o644))
	return path
}

func TestParityDetectsADifference(t *testing.T) {
	path := writeCase(t, "mamba1_inner.json", func(doc map[string]any) {
		y := doc["outputs_float64"].(map[string]any)["y_step"].(map[string]any)["data"].([]any)
		y[5] = y[5].(float64) + 1e-9 // above 1e-12, below float32's tolerance
	})
	code, out, stderr := runCLI("parity", path)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "FAIL")
	assert.Regexp(t, `step/y\s+1\.000e-09`, out)
	assert.Contains(t, stderr, "exceed their tolerance")

	// A looser tolerance accepts it.
	code, _, stderr = runCLI("parity", "--tol64", "1e-8", path)
	assert.Equal(t, 0, code, stderr)
}

func TestParityBadInput(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown kind": {[]string{writeCase(t, "lightning.json", func(d map[string]any) { d["case"] = "rwkv" })}, `unknown case kind "rwkv"`},
		"missing tensor": {[]string{writeCase(t, "mamba2_inner.json", func(d map[string]any) {
			delete(d["inputs"].(map[string]any), "dt_bias")
		})}, "inputs.dt_bias is missing"},
		"shape mismatch": {[]string{writeCase(t, "mamba1_inner.json", func(d map[string]any) {
			x := d["inputs"].(map[string]any)["x"].(map[string]any)
			x["data"] = x["data"].([]any)[1:]
		})}, "inputs.x has 63 values for shape [2 8 4]"},
		"missing config": {[]string{writeCase(t, "lightning.json", func(d map[string]any) {
			delete(d["config"].(map[string]any), "layer_idx")
		})}, "config.layer_idx is missing"},
		"not json":      {[]string{writeBytes(t, "{")}, "bad case file"},
		"no such file":  {[]string{"/nonexistent/case.json"}, "no such file"},
		"bad tolerance": {[]string{"--tol32", "-1"}, "must be positive"},
		"bad flag":      {[]string{"--tol64", "abc"}, "invalid argument"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, stderr := runCLI(append([]string{"parity"}, tc.args...)...)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr, tc.want)
			if strings.HasSuffix(tc.args[len(tc.args)-1], ".json") && name != "no such file" {
				assert.Contains(t, stderr, filepath.Base(tc.args[len(tc.args)-1]), "the error names the file")
			}
		})
	}
}

func writeBytes(t *testing.T, s string) string {
	path := filepath.Join(t.TempDir(), "broken.json")
	require.NoError(t, os.WriteFile(path, []byte(s), 0o644))
	return path
}

func TestUnknownCommand(t *testing.T) {
	code, _, stderr := runCLI("frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "unknown command")
}
