package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/pagemanager/sim"
)

var referenceTrace = filepath.Join("..", "..", "pagemanager", "testdata", "traces", "chat-multiturn.jsonl")

// simRows parses sim's table: capacity -> its cells.
func simRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.GreaterOrEqual(t, len(lines), 3, out)
	assert.Equal(t, []string{"capacity", "prompt", "tokens", "hit", "tokens", "hit", "rate", "evictions", "skipped", "wall"}, strings.Fields(lines[1]))
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		require.Len(t, f, 7, l)
		rows[f[0]] = f[1:]
	}
	return rows
}

// TestSimVLLMReference is the acceptance check: the reference
// trace with --policy vllm prints vLLM's hit tokens and evictions.
func TestSimVLLMReference(t *testing.T) {
	code, out, stderr := runCLI("sim", "--trace", referenceTrace, "--capacity", "128,512,2048", "--page-size", "16", "--policy", "vllm")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "463 requests; policy vllm, page size 16")
	rows := simRows(t, out)
	require.Len(t, rows, 3)
	for capacity, want := range map[string][]string{
		"128":  {"398678", "126496", "0.3173", "19003", "0"},
		"512":  {"398678", "254256", "0.6377", "10642", "0"},
		"2048": {"398678", "340624", "0.8544", "3812", "0"},
	} {
		assert.Equal(t, want, rows[capacity][:5], "capacity %s", capacity)
		assert.Regexp(t, `^[0-9.]+(µs|ms|s)$`, rows[capacity][5])
	}
}

// TestSimLineage: --policy lineage replays through pagemanager.EvictLineage
// and prints its own hit tokens, the same as the package's Replay.
func TestSimLineage(t *testing.T) {
	code, out, stderr := runCLI("sim", "--trace", referenceTrace, "--capacity", "128,512", "--policy", "lineage")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "463 requests; policy lineage, page size 16")
	rows := simRows(t, out)
	require.Len(t, rows, 2)
	reqs, err := sim.ReadTraceFile(referenceTrace)
	require.NoError(t, err)
	for _, c := range []int{128, 512} {
		r, err := sim.Replay(reqs, sim.Config{Capacity: c, PageSize: 16, Policy: sim.Lineage})
		require.NoError(t, err)
		row := rows[strconv.Itoa(c)]
		require.NotNil(t, row, "capacity %d", c)
		assert.Equal(t, strconv.FormatInt(r.HitTokens, 10), row[1], "capacity %d", c)
		assert.Equal(t, strconv.FormatInt(r.Evictions, 10), row[3], "capacity %d", c)
	}
	assert.Equal(t, "144912", rows["128"][1], "+14.6% over vLLM's 126496")
}

// TestSimJSON checks the --json shape of the issue, key for key, and that
// it carries the same numbers as the package.
func TestSimJSON(t *testing.T) {
	code, out, stderr := runCLI("sim", "--trace", referenceTrace, "--capacity", "512,128", "--policy", "shared", "--json")
	require.Equal(t, 0, code, stderr)
	var doc map[string]map[string]map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	require.Len(t, doc, 1)
	require.Len(t, doc["capacities"], 2)
	reqs, err := sim.ReadTraceFile(referenceTrace)
	require.NoError(t, err)
	for _, c := range []int{128, 512} {
		entry := doc["capacities"][map[int]string{128: "128", 512: "512"}[c]]
		keys := make([]string, 0, len(entry))
		for k := range entry {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		assert.Equal(t, []string{"evictions", "hit_rate", "per_request_evictions_so_far", "per_request_hit_tokens",
			"skipped_requests", "total_hit_tokens", "total_prompt_tokens"}, keys)
		want, err := sim.Replay(reqs, sim.Config{Capacity: c, PageSize: 16, Policy: sim.Shared})
		require.NoError(t, err)
		var hits []int
		var evs []int64
		var total int64
		require.NoError(t, json.Unmarshal(entry["per_request_hit_tokens"], &hits))
		require.NoError(t, json.Unmarshal(entry["per_request_evictions_so_far"], &evs))
		require.NoError(t, json.Unmarshal(entry["total_hit_tokens"], &total))
		assert.Len(t, hits, 463)
		assert.Equal(t, want.PerRequestHitTokens, hits)
		assert.Equal(t, want.PerRequestEvictionsSoFar, evs)
		assert.Equal(t, want.HitTokens, total)
	}
}

// TestSimSkips: at 64 pages some reference requests do not fit; they are
// counted, not errors.
func TestSimSkips(t *testing.T) {
	code, out, stderr := runCLI("sim", "--trace", referenceTrace, "--capacity", "64")
	require.Equal(t, 0, code, stderr)
	row := simRows(t, out)["64"]
	assert.NotEqual(t, "0", row[4], "skipped requests")
}

func TestSimGenerate(t *testing.T) {
	args := []string{"sim", "--generate", "--seed", "3", "--systems", "2", "--system-len", "40-60", "--zipf", "0",
		"--conversations", "7", "--turns", "2-3", "--concurrency", "3", "--user-len", "5", "--reply-len", "4-9", "--vocab", "100"}
	code, out, stderr := runCLI(args...)
	require.Equal(t, 0, code, stderr)
	got, err := sim.ReadTrace(strings.NewReader(out))
	require.NoError(t, err)
	want, err := sim.Generate(sim.GenConfig{Seed: 3, Systems: 2, SystemLen: sim.Range{Min: 40, Max: 60}, Conversations: 7,
		Turns: sim.Range{Min: 2, Max: 3}, Concurrency: 3, UserLen: sim.Range{Min: 5, Max: 5}, ReplyLen: sim.Range{Min: 4, Max: 9}, Vocab: 100})
	require.NoError(t, err)
	assert.Equal(t, want, got)

	// --out writes the file; replaying it equals replaying while
	// generating.
	path := filepath.Join(t.TempDir(), "gen.jsonl")
	code, out, stderr = runCLI(append(args, "--out", path)...)
	require.Equal(t, 0, code, stderr)
	assert.Empty(t, out)
	code, fromFile, stderr := runCLI("sim", "--trace", path, "--capacity", "8,32", "--policy", "shared")
	require.Equal(t, 0, code, stderr)
	code, direct, stderr := runCLI(append(args, "--capacity", "8,32", "--policy", "shared")...)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, direct, "trace generated (seed 3)")
	// The tables agree but for the wall-time column, whose width also moves
	// the padding: compare the fields of each line without the wall time.
	wall := regexp.MustCompile(`[0-9.]+(µs|ms|s)\n`)
	stripped := func(s string) string {
		var lines []string
		for _, l := range strings.Split(wall.ReplaceAllString(s[strings.Index(s, "\n"):], "\n"), "\n") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		return strings.Join(lines, "\n")
	}
	assert.Equal(t, stripped(fromFile), stripped(direct))
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	reqs, err := sim.ReadTrace(bytes.NewReader(raw))
	require.NoError(t, err)
	assert.Equal(t, want, reqs)
}

func TestSimBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(
		`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1],"output_token_ids":[2]}`+"\n"+
			`{"id":1,"conversation":0,"turn":1,"prompt_token_ids":[1,2,-3],"output_token_ids":[2]}`+"\n"), 0o644))
	for name, tt := range map[string]struct {
		args []string
		want string
	}{
		"nothing":             {nil, "--trace FILE or --generate is required"},
		"both":                {[]string{"--trace", bad, "--generate"}, "exclude each other"},
		"no capacity":         {[]string{"--trace", referenceTrace}, "--capacity N[,N...] is required"},
		"zero capacity":       {[]string{"--trace", referenceTrace, "--capacity", "128,0"}, `"0" is not a positive number of pages`},
		"word capacity":       {[]string{"--trace", referenceTrace, "--capacity", "lots"}, `"lots" is not a positive number of pages`},
		"twice":               {[]string{"--trace", referenceTrace, "--capacity", "64,64"}, "64 is listed twice"},
		"page size":           {[]string{"--trace", referenceTrace, "--capacity", "64", "--page-size", "0"}, "--page-size 0"},
		"policy":              {[]string{"--trace", referenceTrace, "--capacity", "64", "--policy", "lfu"}, `policy "lfu", want one of vllm, shared`},
		"malformed line":      {[]string{"--trace", bad, "--capacity", "64"}, `bad.jsonl: sim: bad trace: line 2: field "prompt_token_ids": token 2 is -3`},
		"missing file":        {[]string{"--trace", filepath.Join(dir, "none.jsonl"), "--capacity", "64"}, "none.jsonl: no such file"},
		"shape without gen":   {[]string{"--trace", bad, "--capacity", "64", "--systems", "3"}, "--systems needs --generate"},
		"out without gen":     {[]string{"--trace", bad, "--capacity", "64", "--out", "x"}, "--out needs --generate"},
		"policy without cap":  {[]string{"--generate", "--policy", "shared"}, "--policy needs --capacity"},
		"bad range":           {[]string{"--generate", "--turns", "a-b"}, `"a-b": want MIN-MAX`},
		"empty range":         {[]string{"--generate", "--turns", "3-2"}, "turns 3-2"},
		"zero systems":        {[]string{"--generate", "--systems", "0"}, "systems 0"},
		"bad seed":            {[]string{"--generate", "--seed", "-1"}, "invalid argument"},
		"unknown flag":        {[]string{"--generate", "--sytems", "3"}, "unknown flag"},
		"positional argument": {[]string{"--trace", bad, "--capacity", "64", "extra"}, "unknown command"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := runCLI(append([]string{"sim"}, tt.args...)...)
			assert.Equal(t, 2, code, "stdout: %s", out)
			assert.Contains(t, stderr, tt.want)
		})
	}
}
