package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors/engine"
)

// small are flags for a run of a few short requests on a tiny model.
var small = []string{"--progress", "none", "--requests", "10", "--turns", "2", "--system-min", "8", "--system-max", "24",
	"--prompt-min", "2", "--prompt-max", "8", "--output-min", "2", "--output-max", "6", "--slots", "3", "--token-budget", "16",
	"--page-size", "4", "--pages", "24", "--vocab", "64", "--hidden", "16", "--verify-requests", "3"}

func runArgs(extra ...string) []string { return append(append([]string{"run"}, small...), extra...) }

func TestRunReport(t *testing.T) {
	code, out, errOut := runCLI(runArgs()...)
	require.Equal(t, 0, code, errOut)
	for _, want := range []string{"kvmesh run: 10 requests", "tokens ", "runtime per step p50", "peak", "preemptions",
		"prefix cache  hit rate", "verify        ok: 3 requests", "parity        ok: 105 golden-vector checks passed"} {
		assert.Contains(t, out, want)
	}
	assert.Empty(t, errOut, "--progress none prints nothing on stderr")
}

func TestRunJSON(t *testing.T) {
	code, out, errOut := runCLI(runArgs("--json", "--progress", "lines")...)
	require.Equal(t, 0, code, errOut)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m), "stdout is one JSON object")
	for _, k := range []string{"requests", "tokens_in", "tokens_out", "tokens_per_second", "step_p50_us", "step_p99_us",
		"peak_pages", "preemptions", "prefix_hit_rate", "verified", "evictions", "page_utilization", "parity"} {
		assert.Contains(t, m, k)
	}
	assert.Equal(t, 10.0, m["requests"])
	assert.Equal(t, true, m["verified"])
	assert.Contains(t, errOut, "kvmesh run: step", "progress lines go to stderr when it is not a terminal")
	assert.Contains(t, errOut, "10/10 requests done")
}

func TestRunVerifyFailureExits1(t *testing.T) {
	code, out, errOut := runCLI(runArgs("--fault", "recurrent-reset")...)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "verify        FAILED")
	assert.Contains(t, errOut, "verification failed")

	code, out, _ = runCLI(runArgs("--fault", "kv-zero", "--json")...)
	assert.Equal(t, 1, code)
	var rep engine.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.False(t, rep.Verified)
	require.NotNil(t, rep.Verify)
	assert.NotEmpty(t, rep.Verify.Mismatches)
}

func TestRunConfigFile(t *testing.T) {
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "run.yaml")
	require.NoError(t, os.WriteFile(yamlFile, []byte(`
workload:
  requests: 7
  arrival_rate: 0.9
scheduler:
  slots: 2
model:
  layers: [attention, lightning]
verify: 2
`), 0o644))
	code, out, errOut := runCLI(runArgs("--config", yamlFile, "--print-config")...)
	require.Equal(t, 0, code, errOut)
	var cfg engine.Config
	require.NoError(t, json.Unmarshal([]byte(out), &cfg))
	assert.Equal(t, 10, cfg.Workload.Requests, "a flag given on the command line wins over the file")
	assert.Equal(t, 0.9, cfg.Workload.ArrivalRate, "the file wins over the defaults")
	assert.Equal(t, 3, cfg.Scheduler.Slots, "flag")
	assert.Equal(t, "attention,lightning", strings.Join([]string{string(cfg.Model.Layers[0]), string(cfg.Model.Layers[1])}, ","))
	assert.Equal(t, 3, cfg.Verify, "--verify-requests")
	assert.Equal(t, engine.DefaultConfig().Workload.ThinkSteps, cfg.Workload.ThinkSteps, "neither: the default")

	// The printed config is a valid config file (JSON), and runs.
	jsonFile := filepath.Join(dir, "run.json")
	require.NoError(t, os.WriteFile(jsonFile, []byte(out), 0o644))
	code, out, errOut = runCLI("run", "--config", jsonFile, "--progress", "none", "--json", "--parity=false")
	require.Equal(t, 0, code, errOut)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	assert.Equal(t, 10.0, rep["requests"])
	assert.Equal(t, "attention,lightning", rep["model"])
	assert.NotContains(t, rep, "parity")
}

// --metrics-listen serves the run's metrics and says where; the run's
// report is unchanged (the metrics themselves are checked against a
// report in actors/engine).
func TestRunMetricsListen(t *testing.T) {
	code, out, errOut := runCLI(runArgs("--metrics-listen", "127.0.0.1:0")...)
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `^kvmesh: metrics on http://127\.0\.0\.1:\d+/metrics\n$`, errOut)
	assert.Contains(t, out, "verify        ok: 3 requests")
}

func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	require.NoError(t, os.WriteFile(unknown, []byte("workload:\n  request: 3\n"), 0o644))
	badType := filepath.Join(dir, "type.json")
	require.NoError(t, os.WriteFile(badType, []byte(`{"scheduler": {"pages": "many"}}`), 0o644))
	badValue := filepath.Join(dir, "value.yaml")
	require.NoError(t, os.WriteFile(badValue, []byte("workload: {arrival_rate: 0}\n"), 0o644))
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--requests", "0"}, "requests is 0"},
		{[]string{"--requests", "many"}, "invalid argument"},
		{[]string{"--layers", "attention,mlp"}, `layer "mlp"`},
		{[]string{"--layers", "mamba2"}, "no attention layer"},
		{[]string{"--prompt-min", "9", "--prompt-max", "3"}, "user_len is 9..3"},
		{[]string{"--arrival-rate", "-1"}, "arrival_rate is -1"},
		{[]string{"--head-dim", "7"}, "head_dim 7 is odd"},
		{[]string{"--progress", "fancy"}, `--progress "fancy"`},
		{[]string{"--fault", "bitflip"}, `fault "bitflip"`},
		{[]string{"--pages", "5"}, "raise pages (--pages) to at least"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"--config", unknown}, `unknown field "request"`},
		{[]string{"--config", badType}, "cannot unmarshal"},
		{[]string{"--config", badValue}, "arrival_rate is 0"},
		{[]string{"extra"}, "unknown command"},
		{[]string{"--members", "nope"}, `member "nope"`},
		{[]string{"--members", "127.0.0.1:47101", "--tls-cert", "c.pem"}, "go together (got 1 of 3)"},
		{[]string{"--members", "127.0.0.1:47101", "--provider", "consul"}, `provider "consul"`},
		{[]string{"--members", "127.0.0.1:47101", "--cluster-listen", "here"}, `listen "here"`},
		{[]string{"--metrics-listen", "nohost"}, `--metrics-listen: telemetry: metrics listener "nohost"`},
	} {
		code, _, errOut := runCLI(runArgs(tc.args...)...)
		assert.Equal(t, 2, code, "%v: %s", tc.args, errOut)
		assert.Contains(t, errOut, tc.msg, tc.args)
	}
}
