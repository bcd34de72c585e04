package rowstore

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

var (
	errShape        = errors.New("test: bad shape")
	errOutOfRange   = errors.New("test: out of range")
	errIncompatible = errors.New("test: incompatible")
	ops             = Ops{Shape: errShape, OutOfRange: errOutOfRange, Incompatible: errIncompatible}
)

// ramp returns a dense tensor of shape holding 1, 2, 3, ... in row-major
// order.
func ramp(t testing.TB, dtype tensor.DType, shape ...int) tensor.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = float64(i + 1)
	}
	return tensor.Must(tensor.FromFloat64s(dtype, data, shape...))
}

func TestRowLen(t *testing.T) {
	for _, tc := range []struct {
		shape []int
		want  int
	}{
		{[]int{3}, 1},
		{[]int{2, 5}, 5},
		{[]int{2, 3, 4}, 12},
		{[]int{4, 0, 2}, 0},
	} {
		assert.Equal(t, tc.want, RowLen(tc.shape), "%v", tc.shape)
	}
}

func TestNewHasOneLazyChunkPerRow(t *testing.T) {
	st, err := New(tensor.BFloat16, 3, 2, 4)
	require.NoError(t, err)
	assert.True(t, st.HasShape(3, 2, 4))
	assert.Equal(t, tensor.BFloat16, st.DType())
	assert.Equal(t, 8, st.ChunkLen())
	assert.Equal(t, 3, st.NumChunks())
	assert.Equal(t, make([]float64, 24), st.Float64s())
	assert.True(t, IsStore(st))

	_, err = New(tensor.Float32, 2, -1)
	require.Error(t, err)
}

func TestIsStore(t *testing.T) {
	dense := tensor.Must(tensor.New(tensor.Float32, 3, 4))
	row := tensor.Must(tensor.New(tensor.Float32, 1, 4))
	for _, tc := range []struct {
		name string
		t    tensor.Tensor
		want bool
	}{
		{"store", tensor.Must(New(tensor.Float32, 3, 4)), true},
		{"dense with several rows", dense, false},
		{"dense with one row", row, true},
		{"absent", tensor.Tensor{}, false},
	} {
		assert.Equal(t, tc.want, IsStore(tc.t), tc.name)
	}
}

func TestFill(t *testing.T) {
	src := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{0.1, 1, 2.5, -3, 1e-3, 7}, 6))
	st, err := ops.Fill(tensor.Float16, src, 2, 3)
	require.NoError(t, err)
	assert.True(t, st.HasShape(2, 3))
	assert.True(t, IsStore(st))
	want := make([]float64, 6)
	for i, x := range src.Float64s() {
		want[i] = tensor.Float16.Round(x)
	}
	assert.Equal(t, want, st.Float64s(), "converted to the state dtype")

	_, err = ops.Fill(tensor.Float16, src, 2, 4)
	require.ErrorIs(t, err, errShape)
	assert.Regexp(t, "^test: bad shape: ", err.Error())
	_, err = ops.Fill(tensor.Float16, src, 2, -3)
	require.ErrorIs(t, err, errShape)
}

func TestRestore(t *testing.T) {
	st := tensor.Must(ops.Fill(tensor.Float32, ramp(t, tensor.Float32, 3, 2), 3, 2))
	same, err := ops.Restore(st)
	require.NoError(t, err)
	for r := range 3 {
		assert.True(t, same.SharesChunk(r, st, r), "a store is kept as it is (row %d)", r)
	}

	dense := ramp(t, tensor.BFloat16, 3, 2)
	require.False(t, IsStore(dense))
	back, err := ops.Restore(dense)
	require.NoError(t, err)
	assert.True(t, IsStore(back))
	assert.True(t, back.Equal(dense), "same dtype, shape and values")
}

func TestZeroRows(t *testing.T) {
	st := tensor.Must(ops.Fill(tensor.Float32, ramp(t, tensor.Float32, 3, 2), 3, 2))
	z, err := ops.ZeroRows(st, []int{0, 2})
	require.NoError(t, err)
	assert.Equal(t, []float64{0, 0, 3, 4, 0, 0}, z.Float64s())
	assert.True(t, z.SharesChunk(1, st, 1), "untouched rows are shared")
	assert.Equal(t, []float64{1, 2, 3, 4, 5, 6}, st.Float64s(), "the input is unchanged")

	none, err := ops.ZeroRows(st, nil)
	require.NoError(t, err)
	assert.True(t, none.Equal(st))

	_, err = ops.ZeroRows(st, []int{3})
	require.ErrorIs(t, err, errOutOfRange)
}

func TestShareRows(t *testing.T) {
	dst := tensor.Must(ops.Fill(tensor.Float32, ramp(t, tensor.Float32, 4, 2), 4, 2))
	src := tensor.Must(ops.Fill(tensor.Float32, tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{-1, -2, -3, -4}, 2, 2)), 2, 2))
	got, err := ops.ShareRows(dst, src, 1)
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2, -1, -2, -3, -4, 7, 8}, got.Float64s())
	assert.True(t, got.SharesChunk(1, src, 0))
	assert.True(t, got.SharesChunk(2, src, 1))
	assert.True(t, got.SharesChunk(0, dst, 0))
	assert.True(t, got.SharesChunk(3, dst, 3))
	assert.Equal(t, []float64{1, 2, 3, 4, 5, 6, 7, 8}, dst.Float64s(), "the input is unchanged")

	for name, tc := range map[string]struct {
		src  tensor.Tensor
		slot int
	}{
		"past the end":  {src, 3},
		"other dtype":   {tensor.Must(ops.Fill(tensor.Float16, src, 2, 2)), 0},
		"other row len": {tensor.Must(New(tensor.Float32, 1, 3)), 0},
	} {
		_, err := ops.ShareRows(dst, tc.src, tc.slot)
		require.ErrorIs(t, err, errIncompatible, name)
	}
}

func TestCheckRows(t *testing.T) {
	for _, tc := range []struct {
		rows []int
		msg  string
	}{
		{nil, ""},
		{[]int{2, 0}, ""},
		{[]int{3}, "test: out of range: row 3 (batch has rows 0..2)"},
		{[]int{0, -1}, "test: out of range: row -1 (batch has rows 0..2)"},
		{[]int{1, 2, 1}, "test: out of range: row 1 listed twice"},
	} {
		err := ops.CheckRows(tc.rows, 3)
		if tc.msg == "" {
			assert.NoError(t, err, "%v", tc.rows)
			continue
		}
		require.ErrorIs(t, err, errOutOfRange)
		assert.EqualError(t, err, tc.msg)
	}
}
