package convssm

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/rowstore"
	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

var (
	errShape        = errors.New("test: bad shape")
	errDType        = errors.New("test: bad dtype")
	errOutOfRange   = errors.New("test: out of range")
	errIncompatible = errors.New("test: incompatible")
	errEmpty        = errors.New("test: empty view")
	errSnapshot     = errors.New("test: bad snapshot")
	ops             = Ops{Shape: errShape, DType: errDType, OutOfRange: errOutOfRange, Incompatible: errIncompatible, Empty: errEmpty,
		Channels: "channels", SSMAxes: []string{"channels"}}
)

// ramp returns a dense tensor of shape holding first, first+1, ... in
// row-major order.
func ramp(t testing.TB, dtype tensor.DType, first float64, shape ...int) tensor.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = first + float64(i)
	}
	return tensor.Must(tensor.FromFloat64s(dtype, data, shape...))
}

// filled returns a State of batch b with conv (b, 2, 3) = 1, 2, ...,
// SSM (b, 2) = 101, 102, ... and positions 10, 11, ...
func filled(t testing.TB, dtype tensor.DType, b int) State {
	t.Helper()
	s, err := ops.New(dtype, []int{b, 2, 3}, []int{b, 2})
	require.NoError(t, err)
	store := rowstore.Ops{Shape: errShape}
	s.Conv = tensor.Must(store.Fill(dtype, ramp(t, dtype, 1, b, 2, 3), b, 2, 3))
	s.SSM = tensor.Must(store.Fill(dtype, ramp(t, dtype, 101, b, 2), b, 2))
	for i := range s.Positions {
		s.Positions[i] = int32(10 + i)
	}
	return s
}

func TestNew(t *testing.T) {
	s, err := ops.New(tensor.BFloat16, []int{3, 4, 2}, []int{3, 4, 5, 6})
	require.NoError(t, err)
	assert.False(t, s.IsEmpty())
	assert.Equal(t, tensor.BFloat16, s.DType())
	assert.True(t, s.Conv.HasShape(3, 4, 2))
	assert.True(t, s.SSM.HasShape(3, 4, 5, 6))
	assert.True(t, rowstore.IsStore(s.Conv) && rowstore.IsStore(s.SSM))
	assert.Equal(t, []int32{0, 0, 0}, s.Positions)
	assert.Equal(t, make([]float64, 24), s.Conv.Float64s())

	assert.True(t, State{}.IsEmpty())
	assert.Equal(t, tensor.DType(0), State{}.DType())

	_, err = ops.New(tensor.Float32, []int{3, -4, 2}, []int{3, 4})
	require.ErrorIs(t, err, errShape)
	assert.Regexp(t, "^test: bad shape: conv_states: ", err.Error())
	_, err = ops.New(tensor.Float32, []int{3, 4, 2}, []int{3, -4})
	require.ErrorIs(t, err, errShape)
	assert.Regexp(t, "^test: bad shape: ssm_states: ", err.Error())
	for _, d := range []tensor.DType{0, tensor.DType(99)} {
		_, err = ops.New(d, []int{3, 4, 2}, []int{3, 4})
		require.ErrorIs(t, err, errDType)
		assert.Regexp(t, `^test: bad dtype: cache dtype .* \(want float32, bfloat16, float16 or float64\)$`, err.Error())
	}
}

// TestEmpty checks that every operation a view method calls refuses the
// empty view, naming the method.
func TestEmpty(t *testing.T) {
	s := filled(t, tensor.Float32, 2)
	col := tensor.Must(tensor.New(tensor.Float32, 2, 2))
	for _, tc := range []struct {
		op string
		fn func(State) (State, error)
	}{
		{"UpdateConvState", func(e State) (State, error) { return ops.UpdateConv(e, col, 0) }},
		{"UpdateConvStatePositions", func(e State) (State, error) { return ops.UpdateConvPositions(e, col, nil) }},
		{"UpdateSSMState", func(e State) (State, error) { return ops.UpdateSSM(e, col) }},
		{"Reset", ops.Reset},
		{"ResetRows", func(e State) (State, error) { return ops.ResetRows(e, nil) }},
		{"Insert", func(e State) (State, error) { return ops.Insert(e, s, 0) }},
	} {
		_, err := tc.fn(State{})
		require.ErrorIs(t, err, errEmpty, tc.op)
		assert.EqualError(t, err, "test: empty view: "+tc.op+" on an empty view")
		assert.NoError(t, ops.NotEmpty(s, tc.op))
	}
	_, err := ops.Insert(s, State{}, 0)
	require.ErrorIs(t, err, errEmpty)
	assert.EqualError(t, err, "test: empty view: Insert of an empty view")
}

func TestUpdateConv(t *testing.T) {
	// Windows [1 2 3] and [4 5 6] (batch 1, 2 channels, K = 3) roll left to
	// [2 3 1] and [5 6 4]; then the clipped column takes the input.
	s := filled(t, tensor.Float32, 1)
	col := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{7, 8}, 1, 2))
	for _, tc := range []struct {
		cp   int
		want []float64
	}{
		{2, []float64{2, 3, 7, 5, 6, 8}},
		{9, []float64{2, 3, 7, 5, 6, 8}},
		{-4, []float64{7, 3, 1, 8, 6, 4}},
	} {
		got, err := ops.UpdateConv(s, col, tc.cp)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got.Conv.Float64s(), "cp %d", tc.cp)
	}
	cols := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{7, 9, 8, 10}, 1, 2, 2))
	got, err := ops.UpdateConvPositions(s, cols, []int32{-1, 5})
	require.NoError(t, err)
	assert.Equal(t, []float64{7, 3, 9, 8, 6, 10}, got.Conv.Float64s(), "positions clipped to 0 and 2")
	assert.Equal(t, []float64{1, 2, 3, 4, 5, 6}, s.Conv.Float64s(), "the input is unchanged")

	for _, tc := range []struct {
		name string
		fn   func() (State, error)
		msg  string
	}{
		{"column of another shape", func() (State, error) { return ops.UpdateConv(s, cols, 0) },
			"test: bad shape: new_conv_state has shape [1 2 2], want (batch 1, channels 2)"},
		{"absent column", func() (State, error) { return ops.UpdateConv(s, tensor.Tensor{}, 0) },
			"test: bad shape: new_conv_state has shape <absent>, want (batch 1, channels 2)"},
		{"window for other positions", func() (State, error) { return ops.UpdateConvPositions(s, cols, []int32{0}) },
			"test: bad shape: new_conv_state has shape [1 2 2], want (batch 1, channels 2, positions 1)"},
		{"ssm of another shape", func() (State, error) { return ops.UpdateSSM(s, cols) },
			"test: bad shape: new_ssm_state has shape [1 2 2], want (batch 1, channels 2)"},
	} {
		_, err := tc.fn()
		require.ErrorIs(t, err, errShape, tc.name)
		assert.EqualError(t, err, tc.msg, tc.name)
	}
}

func TestUpdateSSM(t *testing.T) {
	s := filled(t, tensor.BFloat16, 2)
	got, err := ops.UpdateSSM(s, tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 2, 3, 1 + 1.0/1024}, 2, 2)))
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2, 3, 1}, got.SSM.Float64s(), "converted to bfloat16")
	assert.True(t, got.Conv.SharesChunk(1, s.Conv, 1), "the conv state is shared")

	rank4 := Ops{Shape: errShape, Empty: errEmpty, SSMAxes: []string{"num_heads", "head_dim", "state_size"}}
	s4, err := rank4.New(tensor.Float32, []int{2, 3, 4}, []int{2, 4, 16, 8})
	require.NoError(t, err)
	_, err = rank4.UpdateSSM(s4, tensor.Must(tensor.New(tensor.Float32, 2, 4, 16, 7)))
	require.ErrorIs(t, err, errShape)
	assert.EqualError(t, err, "test: bad shape: new_ssm_state has shape [2 4 16 7], want (batch 2, num_heads 4, head_dim 16, state_size 8)")
}

func TestClip(t *testing.T) {
	for _, tc := range []struct{ p, k, want int }{
		{-5, 4, 0}, {0, 4, 0}, {2, 4, 2}, {3, 4, 3}, {10, 4, 3}, {7, 1, 0},
	} {
		assert.Equal(t, tc.want, Clip(tc.p, tc.k), "Clip(%d, %d)", tc.p, tc.k)
	}
	assert.Equal(t, []int{0, 1, 3, 3}, ClipAll([]int32{-2, 1, 3, 9}, 4))
	assert.Empty(t, ClipAll(nil, 4))
}

func TestRollConv(t *testing.T) {
	// Windows [1 2 3] and [4 5 6] roll left to [2 3 1] and [5 6 4]; then
	// column cps[j] takes cols[:, :, j] (7, 8, then 9, 10).
	cases := []struct {
		name string
		cps  []int
		want []float64
	}{
		{"decode step", []int{2}, []float64{2, 3, 7, 5, 6, 8}},
		{"first column keeps the rolled-over value", []int{0}, []float64{7, 3, 1, 8, 6, 4}},
		{"two columns", []int{0, 1}, []float64{7, 9, 1, 8, 10, 4}},
		{"later duplicate wins", []int{1, 1}, []float64{2, 9, 1, 5, 10, 4}},
	}
	for _, d := range []tensor.DType{tensor.Float16, tensor.BFloat16, tensor.Float32, tensor.Float64} {
		s := filled(t, d, 1)
		for _, tc := range cases {
			vals := []float64{7, 8}
			if len(tc.cps) == 2 {
				vals = []float64{7, 9, 8, 10}
			}
			cols := tensor.Must(tensor.FromFloat64s(tensor.Float64, vals, 1, 2, len(tc.cps)))
			got, err := ops.RollConv(s, cols, tc.cps)
			require.NoError(t, err, "%s %s", d, tc.name)
			assert.Equal(t, tc.want, got.Conv.Float64s(), "%s %s", d, tc.name)
			assert.Equal(t, d, got.Conv.DType())
			assert.True(t, rowstore.IsStore(got.Conv))
			assert.True(t, got.SSM.SharesChunk(0, s.SSM, 0), "the SSM state is shared")
			assert.Equal(t, s.Positions, got.Positions)
		}
		assert.Equal(t, []float64{1, 2, 3, 4, 5, 6}, s.Conv.Float64s(), "the input is unchanged")
	}

	_, err := ops.RollConv(filled(t, tensor.Float32, 1), tensor.Must(tensor.New(tensor.Float32, 1)), []int{2})
	require.ErrorIs(t, err, errShape, "too few columns")
}

func TestSetSSM(t *testing.T) {
	s := filled(t, tensor.Float16, 2)
	src := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{0.1, -2, 3.3, 4}, 4))
	got, err := ops.SetSSM(s, src)
	require.NoError(t, err)
	assert.True(t, got.SSM.HasShape(2, 2), "keeps the state's shape")
	want := make([]float64, 4)
	for i, x := range src.Float64s() {
		want[i] = tensor.Float16.Round(x)
	}
	assert.Equal(t, want, got.SSM.Float64s(), "converted to the state dtype")
	assert.True(t, got.Conv.SharesChunk(1, s.Conv, 1), "the conv state is shared")
	assert.Equal(t, []float64{101, 102, 103, 104}, s.SSM.Float64s(), "the input is unchanged")

	_, err = ops.SetSSM(s, tensor.Must(tensor.New(tensor.Float32, 3)))
	require.ErrorIs(t, err, errShape)
}

func TestResetRows(t *testing.T) {
	s := filled(t, tensor.Float32, 3)
	got, err := ops.ResetRows(s, []int{2, 0})
	require.NoError(t, err)
	assert.Equal(t, []float64{0, 0, 0, 0, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0, 0, 0, 0, 0}, got.Conv.Float64s())
	assert.Equal(t, []float64{0, 0, 103, 104, 0, 0}, got.SSM.Float64s())
	assert.Equal(t, []int32{0, 11, 0}, got.Positions)
	assert.True(t, got.Conv.SharesChunk(1, s.Conv, 1))
	assert.True(t, got.SSM.SharesChunk(1, s.SSM, 1))
	assert.Equal(t, []float64{101, 102, 103, 104, 105, 106}, s.SSM.Float64s(), "the input is unchanged")
	assert.Equal(t, []int32{10, 11, 12}, s.Positions, "the input is unchanged")

	for _, tc := range []struct {
		rows []int
		msg  string
	}{
		{[]int{3}, "test: out of range: row 3 (batch has rows 0..2)"},
		{[]int{-1}, "test: out of range: row -1 (batch has rows 0..2)"},
		{[]int{1, 1}, "test: out of range: row 1 listed twice"},
	} {
		_, err := ops.ResetRows(s, tc.rows)
		require.ErrorIs(t, err, errOutOfRange)
		assert.EqualError(t, err, tc.msg)
	}
}

func TestReset(t *testing.T) {
	s := filled(t, tensor.BFloat16, 2)
	got, err := ops.Reset(s)
	require.NoError(t, err)
	assert.Equal(t, make([]float64, 12), got.Conv.Float64s())
	assert.Equal(t, make([]float64, 4), got.SSM.Float64s())
	assert.Equal(t, []int32{0, 0}, got.Positions)
	assert.True(t, got.Conv.HasShape(2, 2, 3) && got.SSM.HasShape(2, 2))
	assert.Equal(t, tensor.BFloat16, got.DType())
}

func TestInsert(t *testing.T) {
	dst := filled(t, tensor.Float32, 4)
	src := filled(t, tensor.Float32, 2)
	src.Positions = []int32{-1, -2}
	got, err := ops.Insert(dst, src, 1)
	require.NoError(t, err)
	assert.Equal(t, []int32{10, -1, -2, 13}, got.Positions)
	for r, want := range map[int]struct {
		from State
		row  int
	}{0: {dst, 0}, 1: {src, 0}, 2: {src, 1}, 3: {dst, 3}} {
		assert.True(t, got.Conv.SharesChunk(r, want.from.Conv, want.row), "conv row %d", r)
		assert.True(t, got.SSM.SharesChunk(r, want.from.SSM, want.row), "ssm row %d", r)
	}
	assert.Equal(t, []int32{10, 11, 12, 13}, dst.Positions, "the input is unchanged")

	for _, tc := range []struct {
		slot int
		msg  string
	}{
		{3, "test: out of range: slot 3 for 2 rows (batch has rows 0..3)"},
		{-1, "test: out of range: slot -1 for 2 rows (batch has rows 0..3)"},
	} {
		_, err := ops.Insert(dst, src, tc.slot)
		require.ErrorIs(t, err, errOutOfRange)
		assert.EqualError(t, err, tc.msg)
	}
	_, err = ops.Insert(dst, filled(t, tensor.Float16, 2), 0)
	require.ErrorIs(t, err, errIncompatible, "storage of another dtype cannot be shared")
	assert.EqualError(t, err, "test: incompatible: inserting conv_states float16[2 2 3] / ssm_states float16[2 2] into conv_states float32[4 2 3] / ssm_states float32[4 2] (want equal sizes and dtype)")
	wide, err := ops.New(tensor.Float32, []int{1, 2, 3}, []int{1, 3})
	require.NoError(t, err)
	_, err = ops.Insert(dst, wide, 0)
	require.ErrorIs(t, err, errIncompatible, "another SSM size")
	long, err := ops.New(tensor.Float32, []int{1, 2, 4}, []int{1, 2})
	require.NoError(t, err)
	_, err = ops.Insert(dst, long, 0)
	require.ErrorIs(t, err, errIncompatible, "another kernel size")
}

// view wraps a State for a snapshot round trip; the zero view is empty.
type view struct{ s State }

func (v view) IsEmpty() bool { return v.s.IsEmpty() }

var codec = viewsnap.Codec[view]{
	ViewFormat:  "test.View/v1",
	CacheFormat: "test.Cache/v1",
	Err:         errSnapshot,
	Fields:      []string{"metadata", "conv_states", "ssm_states", "positions"},
	Put: func(e viewsnap.Entry, v view) error {
		Put(e, v.s)
		return e.SetMetadata(v.s.Conv.Shape()[0])
	},
	Get: func(e viewsnap.Entry) (view, error) {
		var b int
		if err := e.Metadata(&b); err != nil {
			return view{}, err
		}
		s, err := ops.Get(e, []int{b, 2, 3}, []int{b, 2})
		return view{s}, err
	},
}

func TestSnapshot(t *testing.T) {
	s := filled(t, tensor.BFloat16, 3)
	data, err := codec.MarshalView(view{s})
	require.NoError(t, err)
	back, err := codec.UnmarshalView(data)
	require.NoError(t, err)
	assert.True(t, back.s.Conv.Equal(s.Conv))
	assert.True(t, back.s.SSM.Equal(s.SSM))
	assert.Equal(t, s.Positions, back.s.Positions)
	assert.True(t, rowstore.IsStore(back.s.Conv) && rowstore.IsStore(back.s.SSM), "store layout restored")

	edit := func(f func(s *tensor.Snapshot)) []byte { return testkit.EditSnapshot(t, data, f) }
	for _, tc := range []struct {
		name string
		data []byte
		is   error
		msg  string
	}{
		{"conv shape", edit(func(s *tensor.Snapshot) { s.Tensors["views.0.conv_states"] = ramp(t, tensor.BFloat16, 0, 3, 3, 2) }), errShape,
			"test: bad snapshot: view 0: test: bad shape: conv_states bfloat16[3 3 2] and ssm_states bfloat16[3 2], want shapes [3 2 3] and [3 2]"},
		{"missing ssm", edit(func(s *tensor.Snapshot) { delete(s.Tensors, "views.0.ssm_states") }), errShape,
			"test: bad snapshot: view 0: test: bad shape: conv_states bfloat16[3 2 3] and ssm_states <absent>, want shapes [3 2 3] and [3 2]"},
		{"mixed dtypes", edit(func(s *tensor.Snapshot) { s.Tensors["views.0.ssm_states"] = ramp(t, tensor.Float32, 0, 3, 2) }), errDType,
			"test: bad snapshot: view 0: test: bad dtype: conv_states is bfloat16, ssm_states is float32 (want one dtype)"},
		{"positions", edit(func(s *tensor.Snapshot) { s.Int32s["views.0.positions"] = []int32{1} }), errShape,
			"test: bad snapshot: view 0: test: bad shape: positions has 1 values, want one per batch row (3)"},
	} {
		_, err := codec.UnmarshalView(tc.data)
		require.ErrorIs(t, err, errSnapshot, tc.name)
		require.ErrorIs(t, err, tc.is, tc.name)
		assert.EqualError(t, err, tc.msg, tc.name)
	}
}
