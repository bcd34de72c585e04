package testkit

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Build returns a tensor of dtype and shape whose element at idx is
// fn(idx).
func Build(dtype tensor.DType, shape []int, fn func(idx []int) float64) tensor.Tensor {
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

// Constant returns a tensor of dtype and shape filled with x.
func Constant(dtype tensor.DType, x float64, shape ...int) tensor.Tensor {
	return Build(dtype, shape, func([]int) float64 { return x })
}

// Column returns column k of a (B, C, K) state as B*C values.
func Column(st tensor.Tensor, k int) []float64 {
	var out []float64
	for b := 0; b < st.Dim(0); b++ {
		for c := 0; c < st.Dim(1); c++ {
			out = append(out, st.At(b, c, k))
		}
	}
	return out
}

// Filled returns n copies of x.
func Filled(n int, x float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = x
	}
	return out
}

// Arange returns 0..k-1.
func Arange(k int) []int32 {
	out := make([]int32, k)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

// OracleTensor is one tensor of a golden-vector file (the golden README's
// "Schema").
type OracleTensor struct {
	Shape []int     `json:"shape"`
	Axes  []string  `json:"axes"`
	Data  []float64 `json:"data"`
}

// Oracle is a golden-vector file: its configuration, inputs and the
// reference outputs in float64 and float32.
type Oracle struct {
	Config         map[string]any          `json:"config"`
	Inputs         map[string]OracleTensor `json:"inputs"`
	OutputsFloat64 map[string]OracleTensor `json:"outputs_float64"`
	OutputsFloat32 map[string]OracleTensor `json:"outputs_float32"`
}

// LoadOracle reads golden-vector file name of
// layers/reference/parity/golden, from a test of a package in layers/.
func LoadOracle(t testing.TB, name string) Oracle {
	t.Helper()
	b, err := os.ReadFile("../reference/parity/golden/" + name)
	require.NoError(t, err)
	var o Oracle
	require.NoError(t, json.Unmarshal(b, &o))
	return o
}

// IntConfig returns integer configuration key, failing t when it is
// missing or not a number.
func (o Oracle) IntConfig(t testing.TB, key string) int {
	t.Helper()
	v, ok := o.Config[key].(float64)
	require.True(t, ok, "config %s", key)
	return int(v)
}
