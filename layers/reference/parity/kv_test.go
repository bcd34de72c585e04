package parity_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestParseKVStorage(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    tensor.DType
		q    tensor.Quantization
		tol  float64
	}{
		{"f64", tensor.Float64, tensor.None, 1e-12},
		{"f32", tensor.Float32, tensor.None, 1e-5},
		{"f16", tensor.Float16, tensor.None, 4e-2},
		{"bf16", tensor.BFloat16, tensor.None, 0.35},
		{"int8", tensor.Float32, tensor.Int8, 0.35},
		{"nf4", tensor.Float32, tensor.NF4, 0.5},
	} {
		kv, err := parity.ParseKVStorage(tc.name)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.name, kv.Name)
		assert.Equal(t, tc.d, kv.DType, tc.name)
		assert.Equal(t, tc.q, kv.Quantization, tc.name)
		assert.Equal(t, tc.tol, kv.Tolerance, tc.name)
		assert.False(t, kv.IsZero())
	}
	_, err := parity.ParseKVStorage("int4")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown kv storage "int4" (want one of f64, f32, f16, bf16, int8, nf4)`)
	assert.True(t, parity.KVStorage{}.IsZero())
}

// goldenKVRun runs an embedded golden file as a KV-storage run.
func goldenKVRun(t *testing.T, file string, opt parity.Options) parity.Result {
	t.Helper()
	data, err := parity.Golden("golden/" + file)
	require.NoError(t, err)
	res, err := parity.Run(file, data, opt)
	require.NoError(t, err)
	return res
}

// TestKVStorageGolden runs the golden attention_gqa through both caches in
// every storage, against the reference outputs with the storage's stated
// tolerance (see parity.ParseKVStorage), and checks that the storage did
// round: the difference is above float64 noise for every storage but f64,
// and grows from f32 to f16 to bf16 to nf4.
func TestKVStorageGolden(t *testing.T) {
	worst := map[string]float64{}
	for _, name := range parity.KVStorageNames() {
		kv, err := parity.ParseKVStorage(name)
		require.NoError(t, err)
		res := goldenKVRun(t, "attention_gqa.json", parity.Options{KV: kv})
		assert.Empty(t, res.Skipped)
		require.Len(t, res.Checks, 2*3*2*3, "pads x schedules (full, step, prefill3) x paths x outputs")
		paths := map[string]int{}
		for _, c := range res.Checks {
			assert.True(t, c.OK, "%s %s: %.3g > %.3g", name, c.Name, c.Diff64, kv.Tolerance)
			assert.True(t, math.IsNaN(c.Diff32), "a KV-storage run has no float32 run")
			worst[name] = max(worst[name], c.Diff64)
			paths[strings.Split(c.Name, "/")[2]]++
		}
		assert.Equal(t, map[string]int{"contiguous": 18, "paged": 18}, paths)
		t.Logf("%-5s max |diff| %.3e (tolerance %g)", name, worst[name], kv.Tolerance)
	}
	assert.Less(t, worst["f64"], 1e-14)
	assert.Greater(t, worst["f32"], 1e-9)
	assert.Greater(t, worst["f16"], 10*worst["f32"])
	assert.Greater(t, worst["bf16"], 4*worst["f16"])
	assert.Greater(t, worst["int8"], 1e-3)
	assert.Greater(t, worst["nf4"], 4*worst["int8"])

	// A tolerance below the observed difference fails.
	kv, _ := parity.ParseKVStorage("int8")
	res := goldenKVRun(t, "attention_gqa.json", parity.Options{KV: kv, TolKV: 1e-4})
	assert.False(t, res.OK())
}

func TestKVStorageSkipsRecurrentCases(t *testing.T) {
	kv, _ := parity.ParseKVStorage("int8")
	for _, f := range []string{"mamba1_inner.json", "mamba2_module.json", "lightning.json"} {
		res := goldenKVRun(t, f, parity.Options{KV: kv})
		assert.Empty(t, res.Checks, f)
		assert.Contains(t, res.Skipped, "no KV cache", f)
		assert.True(t, res.OK(), f)
	}
}

// dequantizedRows returns x (rows of d values) as the caches store and read
// it: rounded to dtype, then quantized per row and dequantized, computed
// with package tensor's whole-tensor quantizers (independent of the caches'
// row-by-row code).
func dequantizedRows(t *testing.T, x []float64, d int, kv parity.KVStorage) []float64 {
	t.Helper()
	out := make([]float64, 0, len(x))
	for r := 0; r < len(x); r += d {
		row := tensor.Must(tensor.FromFloat64s(kv.DType, x[r:r+d], 1, d))
		switch kv.Quantization {
		case tensor.Int8:
			q, err := tensor.QuantizeInt8(row)
			require.NoError(t, err)
			row = q.Dequantize()
		case tensor.NF4:
			q, err := tensor.QuantizeNF4(row, min(64, d))
			require.NoError(t, err)
			row = q.Dequantize()
		}
		out = append(out, row.Float64s()...)
	}
	return out
}

// TestKVStorageExact checks that attention through quantized caches is
// exactly attention over the dequantized keys and values: the golden
// attention_gqa's reference outputs are replaced by those of a plain
// float64 attention (this package's synthetic oracle) over keys and values
// rounded and quantized as each storage does, and every check must then
// pass at 1e-12, through both caches and every schedule.
func TestKVStorageExact(t *testing.T) {
	data, err := parity.Golden("golden/attention_gqa.json")
	require.NoError(t, err)
	var golden caseJSON
	require.NoError(t, json.Unmarshal(data, &golden))
	in := golden.Inputs
	cfg := attentionCfg{b: in["q"].Shape[0], hq: in["q"].Shape[1], t: in["q"].Shape[2], d: in["q"].Shape[3],
		hkv: in["k"].Shape[1], scaling: golden.Config["scaling"].(float64)}
	require.Equal(t, []string{"batch", "kv_heads", "seq", "head_dim"}, in["k"].Axes, "rows of head_dim values are contiguous")
	for _, name := range []string{"int8", "nf4", "bf16", "f16"} {
		t.Run(name, func(t *testing.T) {
			kv, err := parity.ParseKVStorage(name)
			require.NoError(t, err)
			dq := map[string]*nd{"q": in["q"], "attention_mask_padded": in["attention_mask_padded"]}
			for _, x := range []string{"k", "v"} {
				dq[x] = in[x].clone()
				dq[x].Data = dequantizedRows(t, in[x].Data, cfg.d, kv)
			}
			file := &caseJSON{Case: golden.Case, Config: golden.Config, Inputs: in}
			file.withOutputs(attentionOracle[float64](cfg, dq), golden.Out32)
			res, err := parity.Run("exact.json", file.marshal(t), parity.Options{KV: kv, TolKV: 1e-12})
			require.NoError(t, err)
			require.NotEmpty(t, res.Checks)
			for _, c := range res.Checks {
				assert.True(t, c.OK, "%s: %.3g", c.Name, c.Diff64)
			}
		})
	}
}
