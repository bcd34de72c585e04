package transformer

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// testMeta returns metadata for a (b, s, h, d) cache of layers layers.
func testMeta(t testing.TB, b, s, h, d, layers int) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{BatchSize: b, SequenceLength: s, NumHiddenLayers: layers, NumHeads: Ptr(h), HeadDim: Ptr(d)})
	require.NoError(t, err)
	return m
}

// kv returns a float32 (b, q, h, d) tensor with element fn(b, i, h, d).
func kv(t testing.TB, b, q, h, d int, fn func(b, i, h, d int) float64) tensor.Tensor {
	t.Helper()
	data := make([]float64, 0, b*q*h*d)
	for x := 0; x < b; x++ {
		for i := 0; i < q; i++ {
			for y := 0; y < h; y++ {
				for z := 0; z < d; z++ {
					data = append(data, fn(x, i, y, z))
				}
			}
		}
	}
	return tensor.Must(tensor.FromFloat64s(tensor.Float32, data, b, q, h, d))
}

// tokenVal is a distinct value for token i of row b in write number w.
func tokenVal(w int) func(b, i, h, d int) float64 {
	return func(b, i, h, d int) float64 { return float64(w*1000 + b*100 + i*10 + h*2 + d) }
}

// pos reads the h*d values of row b at position s of a (B, S, H, D) cache.
func pos(t testing.TB, c tensor.Tensor, b, s int) []float64 {
	t.Helper()
	hd := c.Dim(2) * c.Dim(3)
	out := make([]float64, hd)
	require.NoError(t, c.ReadFloat64s(out, (b*c.Dim(1)+s)*hd))
	return out
}

// token reads the h*d values of token i of row b of a (B, q, H, D) input.
func token(t testing.TB, x tensor.Tensor, b, i int) []float64 {
	t.Helper()
	return pos(t, x, b, i)
}

// visible returns, per row, the bytes of positions below index[b].
func visible(t testing.TB, c tensor.Tensor, index []int32) [][]float64 {
	t.Helper()
	out := make([][]float64, len(index))
	for b, n := range index {
		for s := 0; s < int(n); s++ {
			out[b] = append(out[b], pos(t, c, b, s)...)
		}
	}
	return out
}

func zeros(n int) []float64 { return make([]float64, n) }

// mask2 builds a (B, S) mask from rows drawn with 'x' and '.'.
func maskFromRows(t testing.TB, shape []int, rows ...string) Mask {
	t.Helper()
	var data []bool
	for _, r := range rows {
		for _, c := range r {
			data = append(data, c == 'x')
		}
	}
	m, err := NewMask(shape, data)
	require.NoError(t, err)
	return m
}

// rounded returns xs rounded to dtype d, as an astype would.
func rounded(d tensor.DType, xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = d.Round(x)
	}
	return out
}
