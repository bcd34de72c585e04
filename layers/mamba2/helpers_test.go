package mamba2

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// dims are the sizes of a test cache.
type dims struct{ layers, b, i, h, p, n, k, g int }

// easy is EasyDeL's test configuration: batch 2, intermediate 64, 4 heads of
// 16, state 16, kernel 4, 1 group (conv_dim 96).
var easy = dims{layers: 3, b: 2, i: 64, h: 4, p: 16, n: 16, k: 4, g: 1}

// small has conv_dim 1 + 2*1*1 = 3 and SSM state (2, 1, 2, 1).
var small = dims{layers: 1, b: 2, i: 1, h: 1, p: 2, n: 1, k: 4, g: 1}

// testMeta returns metadata for d.
func testMeta(t testing.TB, d dims) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: d.layers, BatchSize: d.b, IntermediateSize: d.i,
		NumHeads: d.h, HeadDim: d.p, StateSize: d.n, ConvKernelSize: d.k, NGroups: d.g})
	require.NoError(t, err)
	return m
}

// build returns a tensor of dtype and shape whose element at idx is fn(idx).
func build(t testing.TB, dtype tensor.DType, shape []int, fn func(idx []int) float64) tensor.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	idx := make([]int, len(shape))
	for f := range data {
		r := f
		for a := len(shape) - 1; a >= 0; a-- {
			idx[a] = r % shape[a]
			r /= shape[a]
		}
		data[f] = fn(idx)
	}
	return tensor.Must(tensor.FromFloat64s(dtype, data, shape...))
}

// constant returns a tensor of dtype and shape filled with x.
func constant(t testing.TB, dtype tensor.DType, x float64, shape ...int) tensor.Tensor {
	return build(t, dtype, shape, func([]int) float64 { return x })
}

// column returns column k of a (B, C, K) state as B*C values.
func column(t testing.TB, st tensor.Tensor, k int) []float64 {
	t.Helper()
	var out []float64
	for b := 0; b < st.Dim(0); b++ {
		for c := 0; c < st.Dim(1); c++ {
			out = append(out, st.At(b, c, k))
		}
	}
	return out
}

func filled(n int, x float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = x
	}
	return out
}

// oracleTensor is one tensor of an oracle file (README "Schema").
type oracleTensor struct {
	Shape []int     `json:"shape"`
	Axes  []string  `json:"axes"`
	Data  []float64 `json:"data"`
}

type oracle struct {
	Config         map[string]any          `json:"config"`
	Inputs         map[string]oracleTensor `json:"inputs"`
	OutputsFloat64 map[string]oracleTensor `json:"outputs_float64"`
	OutputsFloat32 map[string]oracleTensor `json:"outputs_float32"`
}

// loadOracle reads a golden-vector file of layers/reference/parity/golden.
func loadOracle(t testing.TB, name string) oracle {
	t.Helper()
	b, err := os.ReadFile("../reference/parity/golden/" + name)
	require.NoError(t, err)
	var o oracle
	require.NoError(t, json.Unmarshal(b, &o))
	return o
}

func (o oracle) intConfig(t testing.TB, key string) int {
	t.Helper()
	v, ok := o.Config[key].(float64)
	require.True(t, ok, "config %s", key)
	return int(v)
}

// arange returns 0..k-1.
func arange(k int) []int32 {
	out := make([]int32, k)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}
