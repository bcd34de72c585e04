package mamba2

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// testView returns a float32 view of the small dims (batch 2, conv_dim 3,
// kernel 4) whose conv state is row b, channel c: [x1 x2 x3 x4] =
// 100b+10c+{1,2,3,4}, with a zero SSM state.
func testView(t *testing.T) View {
	t.Helper()
	v, err := NewView(testMeta(t, small), tensor.Float32, nil)
	require.NoError(t, err)
	v, err = v.UpdateConvStatePositions(testkit.Build(tensor.Float64, []int{2, 3, 4}, func(i []int) float64 {
		return float64(100*i[0] + 10*i[1] + i[2] + 1)
	}), testkit.Arange(4))
	require.NoError(t, err)
	return v
}

func TestNewView(t *testing.T) {
	// EasyDeL's test_mamba2_cache_view_initialization and
	// test_batch_dimension_consistency.
	for _, b := range []int{1, 2, 4, 8} {
		d := easy
		d.b = b
		l := 0
		v, err := NewView(testMeta(t, d), tensor.Float32, &l)
		require.NoError(t, err)
		assert.Equal(t, []int{b, 96, 4}, v.ConvStates().Shape())
		assert.Equal(t, []int{b, 4, 16, 16}, v.SSMStates().Shape())
		assert.Equal(t, make([]int32, b), v.Positions())
		assert.Equal(t, 0, v.SeqlenOffset())
		li, ok := v.LayerIndex()
		assert.True(t, ok)
		assert.Equal(t, 0, li)
		assert.Equal(t, testkit.Filled(b*96*4, 0), v.ConvStates().Float64s())
		assert.Equal(t, testkit.Filled(b*4*16*16, 0), v.SSMStates().Float64s())
		assert.Equal(t, b, v.ConvStates().NumChunks(), "one chunk per batch row")
		assert.Equal(t, b, v.SSMStates().NumChunks(), "one chunk per batch row")
	}
	v, err := NewView(testMeta(t, dims{b: 3, i: 8, h: 4, p: 2, n: 3, k: 5, g: 2}), tensor.BFloat16, nil)
	require.NoError(t, err)
	assert.Equal(t, []int{3, 20, 5}, v.ConvStates().Shape())
	assert.Equal(t, []int{3, 4, 2, 3}, v.SSMStates().Shape())
	_, ok := v.LayerIndex()
	assert.False(t, ok)

	_, err = NewView(testMeta(t, easy), 0, nil)
	require.ErrorIs(t, err, ErrDType)
	_, err = NewView(Metadata{BatchSize: 1}, tensor.Float32, nil)
	require.ErrorIs(t, err, ErrMetadata)
}

func TestViewUpdates(t *testing.T) {
	// EasyDeL's test_mamba2_cache_view_updates: cp=1 on a zero view, then an
	// SSM update of ones.
	v, err := NewView(testMeta(t, easy), tensor.Float32, nil)
	require.NoError(t, err)
	u, err := v.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 96), 1)
	require.NoError(t, err)
	for k := 0; k < 4; k++ {
		want := 0.0
		if k == 1 {
			want = 1
		}
		assert.Equal(t, testkit.Filled(192, want), testkit.Column(u.ConvStates(), k), "column %d", k)
	}
	assert.Equal(t, testkit.Filled(768, 0), v.ConvStates().Float64s(), "receiver unchanged")
	u, err = v.UpdateSSMState(testkit.Constant(tensor.Float32, 1, 2, 4, 16, 16))
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(2048, 1), u.SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(2048, 0), v.SSMStates().Float64s(), "receiver unchanged")
}

func TestUpdateConvStateRollAndWrite(t *testing.T) {
	testkit.RollAndWrite(t, func() View { return testView(t) })
}

func TestUpdateConvStateClipping(t *testing.T) {
	// EasyDeL's test_cache_position_clipping: -1 writes column 0, 10 writes
	// column K-1, on a zero state.
	testkit.ClipFromZero(t, func() View {
		v, err := NewView(testMeta(t, easy), tensor.Float32, nil)
		require.NoError(t, err)
		return v
	})
}

func TestUpdateConvStatePositions(t *testing.T) {
	v := testView(t)
	cols := testkit.Build(tensor.Float32, []int{2, 3, 2}, func(i []int) float64 { return -float64(100*i[0]+10*i[1]) - float64(i[2]) })
	// Row 0, channel 1: [11 12 13 14] rolls to [12 13 14 11]; 5 clips to 3
	// and takes p0 = -10, -2 clips to 0 and takes p1 = -11.
	next, err := v.UpdateConvStatePositions(cols, []int32{5, -2})
	require.NoError(t, err)
	assert.Equal(t, []float64{-11, 13, 14, -10}, testkit.Windows(next.ConvStates())[1])
	// Later duplicates win: row 1, channel 1 [111 .. 114] gets p1 = -111.
	next, err = v.UpdateConvStatePositions(cols, []int32{3, 3})
	require.NoError(t, err)
	assert.Equal(t, []float64{112, 113, 114, -111}, testkit.Windows(next.ConvStates())[4])
}

func TestConvStateIsLastKInputs(t *testing.T) {
	testkit.LastKInputs(t, func() View {
		v, err := NewView(testMeta(t, small), tensor.Float64, nil)
		require.NoError(t, err)
		return v
	})
}

func TestUpdatesConvertDType(t *testing.T) {
	testkit.ConvertsDType(t, func(dtype tensor.DType) View {
		v, err := NewView(testMeta(t, small), dtype, nil)
		require.NoError(t, err)
		return v
	})
}

func TestUpdateSeq(t *testing.T) {
	v := testView(t)
	u, err := v.UpdateSeq(1)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 1}, u.Positions())
	assert.Equal(t, 1, u.SeqlenOffset())
	u, err = u.UpdateSeq(5)
	require.NoError(t, err)
	assert.Equal(t, []int32{6, 6}, u.Positions())
	assert.Equal(t, 6, u.SeqlenOffset())
	u, err = u.UpdateSeq(0)
	require.NoError(t, err)
	assert.Equal(t, 6, u.SeqlenOffset())
	assert.Equal(t, []int32{0, 0}, v.Positions(), "receiver unchanged")
	assert.Equal(t, 0, v.SeqlenOffset(), "receiver unchanged")
	assert.True(t, u.ConvStates().Equal(v.ConvStates()), "states untouched")

	_, err = v.UpdateSeq(-1)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "UpdateSeq(-1)")
	_, err = u.UpdateSeq(math.MaxInt32)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "positions[0] = 6 + 2147483647 overflows int32")
	_, err = View{}.UpdateSeq(1)
	require.ErrorIs(t, err, ErrEmpty)
}

func TestResetAndResetRows(t *testing.T) {
	v := testView(t)
	v, err := v.UpdateSSMState(testkit.Build(tensor.Float32, []int{2, 1, 2, 1}, func(i []int) float64 { return float64(1 + i[0]) }))
	require.NoError(t, err)
	v, err = v.UpdateSeq(3)
	require.NoError(t, err)
	conv := v.ConvStates().Float64s()

	z, err := v.Reset()
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(24, 0), z.ConvStates().Float64s())
	assert.Equal(t, testkit.Filled(4, 0), z.SSMStates().Float64s())
	assert.Equal(t, []int32{0, 0}, z.Positions())
	assert.Equal(t, 0, z.SeqlenOffset())
	assert.Equal(t, v.SSMStates().Shape(), z.SSMStates().Shape())
	assert.Equal(t, conv, v.ConvStates().Float64s(), "receiver unchanged")
	assert.Equal(t, 3, v.SeqlenOffset(), "receiver unchanged")

	r, err := v.ResetRows(0)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(12, 0), conv[12:]...), r.ConvStates().Float64s())
	assert.Equal(t, []float64{0, 0, 2, 2}, r.SSMStates().Float64s())
	assert.Equal(t, []int32{0, 3}, r.Positions())
	assert.Equal(t, 3, r.SeqlenOffset())
	assert.True(t, r.ConvStates().SharesChunk(1, v.ConvStates(), 1), "row 1 shared")
	assert.True(t, r.SSMStates().SharesChunk(1, v.SSMStates(), 1), "row 1 shared")

	_, err = v.ResetRows(2)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "row 2 (batch has rows 0..1)")
}

func TestViewInsert(t *testing.T) {
	d := small
	d.b = 4
	dst, err := NewView(testMeta(t, d), tensor.Float32, nil)
	require.NoError(t, err)
	src, err := testView(t).UpdateSeq(7)
	require.NoError(t, err)
	src, err = src.UpdateSSMState(testkit.Constant(tensor.Float32, 2, 2, 1, 2, 1))
	require.NoError(t, err)
	got, err := dst.Insert(src, 2)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(24, 0), src.ConvStates().Float64s()...), got.ConvStates().Float64s())
	assert.Equal(t, []float64{0, 0, 0, 0, 2, 2, 2, 2}, got.SSMStates().Float64s())
	assert.Equal(t, []int32{0, 0, 7, 7}, got.Positions())
	assert.Equal(t, 0, got.SeqlenOffset(), "the receiver's offset is kept")
	assert.True(t, got.ConvStates().SharesChunk(3, src.ConvStates(), 1))
	assert.True(t, got.SSMStates().SharesChunk(2, src.SSMStates(), 0))

	_, err = dst.Insert(src, 3)
	require.ErrorIs(t, err, ErrOutOfRange)
	o := small
	o.n = 2
	other, err := NewView(testMeta(t, o), tensor.Float32, nil)
	require.NoError(t, err)
	_, err = dst.Insert(other, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(View{}, 0)
	require.ErrorIs(t, err, ErrEmpty)
}

func TestViewUpdateErrors(t *testing.T) {
	v, err := NewView(testMeta(t, easy), tensor.Float32, nil)
	require.NoError(t, err)
	cases := []struct {
		name string
		fn   func() (View, error)
		is   error
		msg  string
	}{
		{"conv width without B and C", func() (View, error) { return v.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 64), 1) },
			ErrShape, "new_conv_state has shape [2 64], want (batch 2, conv_dim 96)"},
		{"conv absent", func() (View, error) { return v.UpdateConvState(tensor.Tensor{}, 1) }, ErrShape, "<absent>"},
		{"positions count", func() (View, error) {
			return v.UpdateConvStatePositions(testkit.Constant(tensor.Float32, 1, 2, 96, 2), []int32{1})
		}, ErrShape, "want (batch 2, conv_dim 96, positions 1)"},
		{"ssm shape", func() (View, error) { return v.UpdateSSMState(testkit.Constant(tensor.Float32, 1, 2, 4, 16, 15)) },
			ErrShape, "new_ssm_state has shape [2 4 16 15], want (batch 2, num_heads 4, head_dim 16, state_size 16)"},
		{"empty conv", func() (View, error) { return View{}.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 96), 0) }, ErrEmpty, "UpdateConvState"},
		{"empty ssm", func() (View, error) { return View{}.UpdateSSMState(tensor.Tensor{}) }, ErrEmpty, "UpdateSSMState"},
		{"empty reset", func() (View, error) { return View{}.Reset() }, ErrEmpty, "Reset"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestViewString(t *testing.T) {
	l := 1
	v, err := NewView(testMeta(t, easy), tensor.Float32, &l)
	require.NoError(t, err)
	v, err = v.UpdateSeq(2)
	require.NoError(t, err)
	assert.Equal(t, "Mamba2CacheView(conv_states=float32[2 96 4], ssm_states=float32[2 4 16 16], positions=int32[2], seqlen_offset=2, layer_index=1)", v.String())
	assert.Equal(t, "None", View{}.String())
}
