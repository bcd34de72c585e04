package lightning

import (
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

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

// testMeta returns metadata with batch b, heads h and head dim d.
func testMeta(t testing.TB, b, h, d int) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{BatchSize: Ptr(b), NumHeads: Ptr(h), HeadDim: Ptr(d)})
	require.NoError(t, err)
	return m
}

// wave returns a deterministic, irregular value for a flat index and seed.
func wave(seed, i int) float64 { return math.Sin(float64(7*i+13*seed+1)) * (1 + 0.25*float64(i%5)) }
