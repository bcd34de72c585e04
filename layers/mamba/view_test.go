package mamba

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// testView returns a float32 view of batch 2, intermediate 3, state 2 and
// kernel 4 whose conv state is row b, channel c: [a b c d] with the values
// 100b+10c+{1,2,3,4}, and whose SSM state is zero.
func testView(t *testing.T) View {
	t.Helper()
	v, err := NewView(testMeta(t, 1, 2, 3, 2, 4), tensor.Float32, nil)
	require.NoError(t, err)
	v, err = v.UpdateConvStatePositions(testkit.Build(tensor.Float64, []int{2, 3, 4}, func(i []int) float64 {
		return float64(100*i[0] + 10*i[1] + i[2] + 1)
	}), []int32{0, 1, 2, 3})
	require.NoError(t, err)
	return v
}

func TestNewViewShapesAndZeros(t *testing.T) {
	cases := []struct{ b, i, n, k int }{{2, 64, 16, 4}, {1, 32, 8, 2}, {4, 128, 32, 8}, {8, 256, 64, 16}, {1, 1, 1, 1}}
	for _, tc := range cases {
		v, err := NewView(testMeta(t, 1, tc.b, tc.i, tc.n, tc.k), tensor.Float32, nil)
		require.NoError(t, err)
		assert.Equal(t, []int{tc.b, tc.i, tc.k}, v.ConvStates().Shape())
		assert.Equal(t, []int{tc.b, tc.i, tc.n}, v.SSMStates().Shape())
		assert.Equal(t, make([]int32, tc.b), v.Positions())
		assert.Equal(t, testkit.Filled(tc.b*tc.i*tc.k, 0), v.ConvStates().Float64s())
		assert.Equal(t, testkit.Filled(tc.b*tc.i*tc.n, 0), v.SSMStates().Float64s())
		_, ok := v.LayerIndex()
		assert.False(t, ok)
		assert.False(t, v.IsEmpty())
		assert.Equal(t, tc.b, v.ConvStates().NumChunks(), "one chunk per batch row")
		assert.Equal(t, tc.b, v.SSMStates().NumChunks(), "one chunk per batch row")
	}
}

func TestNewViewErrors(t *testing.T) {
	_, err := NewView(testMeta(t, 1, 2, 4, 2, 4), 0, nil)
	require.ErrorIs(t, err, ErrDType)
	_, err = NewView(Metadata{BatchSize: 2, IntermediateSize: 4, SSMStateSize: 2}, tensor.Float32, nil)
	require.ErrorIs(t, err, ErrMetadata)
	assert.Contains(t, err.Error(), "conv_kernel_size must be positive (got 0)")
}

func TestUpdateConvStateRollAndWrite(t *testing.T) {
	testkit.RollAndWrite(t, func() View { return testView(t) })
}

func TestUpdateConvStateClippingFromZero(t *testing.T) {
	// EasyDeL's vectors: zero state, new = ones(2, 64).
	testkit.ClipFromZero(t, func() View {
		v, err := NewView(testMeta(t, 1, 2, 64, 16, 4), tensor.Float32, nil)
		require.NoError(t, err)
		return v
	})
}

func TestUpdateConvStatePositions(t *testing.T) {
	// Windows [x1 x2 x3 x4] roll to [x2 x3 x4 x1]; then column clip(cp[j])
	// takes p_j = -(100b+10c) - j, in order.
	cases := []struct {
		name string
		cps  []int32
		want func(x1, x2, x3, x4, p0, p1 float64) []float64
	}{
		{"clipped ends", []int32{5, -2}, func(x1, x2, x3, x4, p0, p1 float64) []float64 { return []float64{p1, x3, x4, p0} }},
		{"duplicate: later wins", []int32{3, 7}, func(x1, x2, x3, x4, p0, p1 float64) []float64 { return []float64{x2, x3, x4, p1} }},
		{"middle", []int32{1, 2}, func(x1, x2, x3, x4, p0, p1 float64) []float64 { return []float64{x2, p0, p1, x1} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := testView(t)
			cols := testkit.Build(tensor.Float32, []int{2, 3, 2}, func(i []int) float64 { return -float64(100*i[0]+10*i[1]) - float64(i[2]) })
			next, err := v.UpdateConvStatePositions(cols, tc.cps)
			require.NoError(t, err)
			var want [][]float64
			for b := 0; b < 2; b++ {
				for c := 0; c < 3; c++ {
					base := float64(100*b + 10*c)
					want = append(want, tc.want(base+1, base+2, base+3, base+4, -base, -base-1))
				}
			}
			assert.Equal(t, want, testkit.Windows(next.ConvStates()))
		})
	}
	t.Run("full window", func(t *testing.T) {
		v := testView(t)
		cols := testkit.Build(tensor.Float32, []int{2, 3, 4}, func(i []int) float64 { return float64(7 * (i[0] + i[1] + i[2])) })
		next, err := v.UpdateConvStatePositions(cols, []int32{0, 1, 2, 3})
		require.NoError(t, err)
		assert.Equal(t, cols.Float64s(), next.ConvStates().Float64s())
	})
	t.Run("no positions only rolls", func(t *testing.T) {
		v := testView(t)
		next, err := v.UpdateConvStatePositions(tensor.Must(tensor.New(tensor.Float32, 2, 3, 0)), nil)
		require.NoError(t, err)
		assert.Equal(t, []float64{2, 3, 4, 1}, testkit.Windows(next.ConvStates())[0])
	})
}

func TestConvStateIsLastKInputs(t *testing.T) {
	testkit.LastKInputs(t, func() View {
		v, err := NewView(testMeta(t, 1, 2, 3, 2, 4), tensor.Float64, nil)
		require.NoError(t, err)
		return v
	})
}

func TestUpdateConvStateConvertsDType(t *testing.T) {
	testkit.ConvertsDType(t, func(dtype tensor.DType) View {
		v, err := NewView(testMeta(t, 1, 1, 2, 2, 2), dtype, nil)
		require.NoError(t, err)
		return v
	})
}

func TestViewUpdateErrors(t *testing.T) {
	v, err := NewView(testMeta(t, 1, 2, 64, 16, 4), tensor.Float32, nil)
	require.NoError(t, err)
	cases := []struct {
		name string
		fn   func() (View, error)
		is   error
		msg  string
	}{
		{"conv wrong channels", func() (View, error) { return v.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 63), 0) },
			ErrShape, "new_conv_state has shape [2 63], want (batch 2, intermediate_size 64)"},
		{"conv wrong batch", func() (View, error) { return v.UpdateConvState(testkit.Constant(tensor.Float32, 1, 3, 64), 0) }, ErrShape, "[3 64]"},
		{"conv absent", func() (View, error) { return v.UpdateConvState(tensor.Tensor{}, 0) }, ErrShape, "<absent>"},
		{"conv 3-D for scalar position", func() (View, error) { return v.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 64, 1), 0) }, ErrShape, "[2 64 1]"},
		{"positions count", func() (View, error) {
			return v.UpdateConvStatePositions(testkit.Constant(tensor.Float32, 1, 2, 64, 4), []int32{0, 1, 2})
		}, ErrShape, "want (batch 2, intermediate_size 64, positions 3)"},
		{"ssm shape", func() (View, error) { return v.UpdateSSMState(testkit.Constant(tensor.Float32, 1, 2, 64, 15)) },
			ErrShape, "new_ssm_state has shape [2 64 15], want (batch 2, intermediate_size 64, ssm_state_size 16)"},
		{"reset rows out of range", func() (View, error) { return v.ResetRows(2) }, ErrOutOfRange, "row 2 (batch has rows 0..1)"},
		{"reset rows negative", func() (View, error) { return v.ResetRows(-1) }, ErrOutOfRange, "row -1"},
		{"reset rows twice", func() (View, error) { return v.ResetRows(1, 1) }, ErrOutOfRange, "row 1 listed twice"},
		{"empty conv", func() (View, error) { return View{}.UpdateConvState(testkit.Constant(tensor.Float32, 1, 2, 64), 0) }, ErrEmpty, "UpdateConvState"},
		{"empty ssm", func() (View, error) { return View{}.UpdateSSMState(testkit.Constant(tensor.Float32, 1, 2, 64, 16)) }, ErrEmpty, "UpdateSSMState"},
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

func TestVersionsAreIndependent(t *testing.T) {
	// Two versions derived from one base by decode steps never see each
	// other's writes, and the base keeps its bytes.
	base := testView(t)
	baseConv := base.ConvStates().Float64s()
	a, err := base.UpdateConvState(testkit.Constant(tensor.Float32, 5, 2, 3), 3)
	require.NoError(t, err)
	b, err := base.UpdateConvState(testkit.Constant(tensor.Float32, 6, 2, 3), 3)
	require.NoError(t, err)
	a2, err := a.UpdateConvState(testkit.Constant(tensor.Float32, 7, 2, 3), 3)
	require.NoError(t, err)
	assert.Equal(t, baseConv, base.ConvStates().Float64s())
	assert.Equal(t, []float64{2, 3, 4, 5}, testkit.Windows(a.ConvStates())[0])
	assert.Equal(t, []float64{2, 3, 4, 6}, testkit.Windows(b.ConvStates())[0])
	assert.Equal(t, []float64{3, 4, 5, 7}, testkit.Windows(a2.ConvStates())[0])

	s1, err := base.UpdateSSMState(testkit.Constant(tensor.Float32, 1, 2, 3, 2))
	require.NoError(t, err)
	s2, err := s1.UpdateSSMState(testkit.Constant(tensor.Float32, 2, 2, 3, 2))
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(12, 0), base.SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(12, 1), s1.SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(12, 2), s2.SSMStates().Float64s())
	assert.True(t, s2.ConvStates().SharesChunk(0, base.ConvStates(), 0), "an SSM update shares the conv state")
}

func TestResetAndResetRows(t *testing.T) {
	v := testView(t)
	v, err := v.UpdateSSMState(testkit.Build(tensor.Float32, []int{2, 3, 2}, func(i []int) float64 { return float64(1 + i[0]) }))
	require.NoError(t, err)
	conv, ssm := v.ConvStates().Float64s(), v.SSMStates().Float64s()

	z, err := v.Reset()
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(24, 0), z.ConvStates().Float64s())
	assert.Equal(t, testkit.Filled(12, 0), z.SSMStates().Float64s())
	assert.Equal(t, v.ConvStates().Shape(), z.ConvStates().Shape())
	assert.Equal(t, tensor.Float32, z.DType())
	assert.Equal(t, conv, v.ConvStates().Float64s(), "receiver unchanged")
	assert.Equal(t, ssm, v.SSMStates().Float64s(), "receiver unchanged")

	r, err := v.ResetRows(1)
	require.NoError(t, err)
	assert.Equal(t, append(conv[:12:12], testkit.Filled(12, 0)...), r.ConvStates().Float64s())
	assert.Equal(t, append(testkit.Filled(6, 1), testkit.Filled(6, 0)...), r.SSMStates().Float64s())
	assert.True(t, r.ConvStates().SharesChunk(0, v.ConvStates(), 0), "row 0 shared, not copied")
	assert.True(t, r.SSMStates().SharesChunk(0, v.SSMStates(), 0), "row 0 shared, not copied")
	assert.Equal(t, conv, v.ConvStates().Float64s(), "receiver unchanged")

	// A zeroed row takes new writes; the receiver still does not change.
	r2, err := r.UpdateConvState(testkit.Constant(tensor.Float32, 9, 2, 3), 3)
	require.NoError(t, err)
	assert.Equal(t, []float64{0, 0, 0, 9}, testkit.Windows(r2.ConvStates())[3])
	assert.Equal(t, testkit.Filled(12, 0), r.ConvStates().Float64s()[12:])
}

func TestViewInsert(t *testing.T) {
	dst, err := NewView(testMeta(t, 1, 4, 3, 2, 4), tensor.Float32, nil)
	require.NoError(t, err)
	src, err := testView(t).UpdateSSMState(testkit.Constant(tensor.Float32, 3, 2, 3, 2)) // batch 2
	require.NoError(t, err)
	got, err := dst.Insert(src, 1)
	require.NoError(t, err)
	conv := got.ConvStates().Float64s()
	assert.Equal(t, testkit.Filled(12, 0), conv[:12])
	assert.Equal(t, src.ConvStates().Float64s(), conv[12:36])
	assert.Equal(t, testkit.Filled(12, 0), conv[36:])
	assert.True(t, got.ConvStates().SharesChunk(1, src.ConvStates(), 0))
	assert.True(t, got.ConvStates().SharesChunk(2, src.ConvStates(), 1))
	assert.True(t, got.SSMStates().SharesChunk(2, src.SSMStates(), 1))
	assert.Equal(t, append(append(testkit.Filled(6, 0), testkit.Filled(12, 3)...), testkit.Filled(6, 0)...), got.SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(48, 0), dst.ConvStates().Float64s(), "receiver unchanged")

	// Writing the inserted rows does not change src.
	srcConv := src.ConvStates().Float64s()
	_, err = got.UpdateConvState(testkit.Constant(tensor.Float32, 1, 4, 3), 3)
	require.NoError(t, err)
	assert.Equal(t, srcConv, src.ConvStates().Float64s())

	_, err = dst.Insert(src, 3)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "slot 3 for 2 rows (batch has rows 0..3)")
	_, err = dst.Insert(src, -1)
	require.ErrorIs(t, err, ErrOutOfRange)
	other, err := NewView(testMeta(t, 1, 1, 3, 2, 4), tensor.BFloat16, nil)
	require.NoError(t, err)
	_, err = dst.Insert(other, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	other, err = NewView(testMeta(t, 1, 1, 3, 2, 3), tensor.Float32, nil)
	require.NoError(t, err)
	_, err = dst.Insert(other, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(View{}, 0)
	require.ErrorIs(t, err, ErrEmpty)
}

func TestViewString(t *testing.T) {
	l := 3
	v, err := NewView(testMeta(t, 1, 2, 64, 16, 4), tensor.Float32, &l)
	require.NoError(t, err)
	assert.Equal(t, "MambaCacheView(conv_states=float32[2 64 4], ssm_states=float32[2 64 16], layer_index=3)", v.String())
	v, err = NewView(testMeta(t, 1, 2, 64, 16, 4), tensor.BFloat16, nil)
	require.NoError(t, err)
	assert.Equal(t, "MambaCacheView(conv_states=bfloat16[2 64 4], ssm_states=bfloat16[2 64 16], layer_index=None)", v.String())
	assert.Equal(t, "None", View{}.String())
}

func TestConcurrentVersionsFromOneBase(t *testing.T) {
	// Writers deriving versions from one base in parallel (run with -race)
	// each see only their own writes; the base never changes.
	base := testView(t)
	baseConv := base.ConvStates().Float64s()
	const n = 8
	got := make([]View, n)
	done := make(chan struct{})
	for w := 0; w < n; w++ {
		go func() {
			defer func() { done <- struct{}{} }()
			v := base
			for step := 0; step < 5; step++ {
				var err error
				if v, err = v.UpdateConvState(testkit.Constant(tensor.Float32, float64(w), 2, 3), 3); err != nil {
					panic(err)
				}
				if v, err = v.UpdateSSMState(testkit.Constant(tensor.Float32, float64(w), 2, 3, 2)); err != nil {
					panic(err)
				}
			}
			got[w] = v
		}()
	}
	for w := 0; w < n; w++ {
		<-done
	}
	for w := 0; w < n; w++ {
		assert.Equal(t, testkit.Filled(24, float64(w)), got[w].ConvStates().Float64s(), "writer %d", w)
		assert.Equal(t, testkit.Filled(12, float64(w)), got[w].SSMStates().Float64s(), "writer %d", w)
	}
	assert.Equal(t, baseConv, base.ConvStates().Float64s())
}
