package paged

import (
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/require"
)

// testMeta returns valid metadata for 2 layers with h kv heads, n pages of
// ps positions, head dim d and 4 pages per sequence.
func testMeta(h, n, ps, d int) Metadata {
	return Metadata{
		BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: n, NumPagesPerSequence: 4, MaxSequences: 4 * ps,
		PageSize: ps, NumKVHeads: h, KVHeadDimSize: d, HBMUtilization: 0.5,
	}
}

func testView(t testing.TB, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	v, err := NewView(meta, dtype, 1)
	require.NoError(t, err)
	return v
}

// kvOf returns a (rows, h, d) tensor of dtype whose element (r, hh, j) is
// base + r*100 + hh*10 + j.
func kvOf(t testing.TB, dtype tensor.DType, rows, h, d int, base float32) tensor.Tensor {
	t.Helper()
	data := make([]float32, 0, rows*h*d)
	for r := range rows {
		for hh := range h {
			for j := range d {
				data = append(data, base+float32(r*100+hh*10+j))
			}
		}
	}
	return tensor.Must(tensor.FromFloat32s(dtype, data, rows, h, d))
}

// row returns the (h, d) values of row r of a (rows, h, d) tensor.
func row(t testing.TB, x tensor.Tensor, r int) []float32 {
	t.Helper()
	n := x.Dim(1) * x.Dim(2)
	out := make([]float32, n)
	require.NoError(t, x.ReadFloat32s(out, r*n))
	return out
}

// slot returns the d values of head h, page p, offset o of a page tensor.
func slot(t testing.TB, pages tensor.Tensor, h, p, o int) []float32 {
	t.Helper()
	out := make([]float32, pages.Dim(3))
	require.NoError(t, pages.ReadFloat32s(out, pages.Offset(h, p, o, 0)))
	return out
}

// headRow returns the d values of head h of row r of a (rows, h, d) tensor.
func headRow(t testing.TB, x tensor.Tensor, r, h int) []float32 {
	t.Helper()
	out := make([]float32, x.Dim(2))
	require.NoError(t, x.ReadFloat32s(out, x.Offset(r, h, 0)))
	return out
}
