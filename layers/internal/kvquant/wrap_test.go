package kvquant

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Wrap takes rows in a format's stored form, checking their dtypes and
// element counts, and WriteRows copies them byte for byte.
func TestWrap(t *testing.T) {
	i8, err := NewFormat(tensor.BFloat16, tensor.Int8, 0, 4)
	require.NoError(t, err)
	codes := tensor.Must(tensor.FromBytes(tensor.I8, []byte{1, 2, 3, 4, 0xff, 0x80, 7, 8}, 8))
	scales := tensor.Must(tensor.FromFloat64s(tensor.BFloat16, []float64{0.5, 0.25}, 2))
	enc, err := i8.Wrap(codes, scales)
	require.NoError(t, err)
	s, err := New(i8, Layout{RowsPerChunk: 2}, 4, 4)
	require.NoError(t, err)
	e := s.Edit()
	require.NoError(t, e.WriteRows(1, &enc, 0, 1, 2))
	out := e.Store()
	got := make([]byte, 8)
	require.NoError(t, out.Data.ReadBytes(got, tensor.I8, 4))
	assert.Equal(t, codes.Bytes(), got)
	sc := make([]float64, 2)
	require.NoError(t, out.Scales.ReadFloat64s(sc, 1))
	assert.Equal(t, []float64{0.5, 0.25}, sc)

	none, err := NewFormat(tensor.Float32, tensor.None, 0, 4)
	require.NoError(t, err)
	vals := tensor.Must(tensor.FromFloat64s(tensor.Float32, make([]float64, 8), 8))
	for _, tc := range []struct {
		name         string
		f            Format
		data, scales tensor.Tensor
		msg          string
	}{
		{"codes of another dtype", i8, vals, scales, "stored data float32[8] is not whole rows of 4 int8 elements"},
		{"partial row", i8, tensor.Must(tensor.FromBytes(tensor.I8, make([]byte, 6), 6)), scales, "not whole rows of 4"},
		{"missing scales", i8, codes, tensor.Tensor{}, "want 2 rows of 1 bfloat16 elements"},
		{"scales of another dtype", i8, codes, tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 1}, 2)), "want 2 rows of 1 bfloat16"},
		{"scales for unquantized rows", none, vals, scales, "scales bfloat16[2] given for unquantized float32 rows"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.f.Wrap(tc.data, tc.scales)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}
