package lightning

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// kv4 returns a (b, h, t, d) float64 tensor of the given values.
func kv4(t *testing.T, data []float64, b, h, tok, d int) tensor.Tensor {
	t.Helper()
	return tensor.Must(tensor.FromFloat64s(tensor.Float64, data, b, h, tok, d))
}

func newView(t *testing.T, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	v, err := NewView(meta, dtype, nil)
	require.NoError(t, err)
	return v
}

func TestNewViewIsAbsent(t *testing.T) {
	l := 2
	v, err := NewView(testMeta(t, 2, 4, 8), tensor.BFloat16, &l)
	require.NoError(t, err)
	assert.False(t, v.HasKeyValue())
	assert.True(t, v.KeyValue().IsZero())
	assert.False(t, v.IsEmpty())
	assert.Equal(t, tensor.BFloat16, v.DType())
	li, ok := v.LayerIndex()
	assert.True(t, ok)
	assert.Equal(t, 2, li)
	assert.Equal(t, "LightningCacheView(key_value=None, layer_index=2)", v.String())
	assert.True(t, View{}.IsEmpty())
	assert.Equal(t, "None", View{}.String())

	_, err = NewView(testMeta(t, 2, 4, 8), 0, nil)
	require.ErrorIs(t, err, ErrDType)
	_, err = NewView(Metadata{BatchSize: Ptr(0)}, tensor.Float32, nil)
	require.ErrorIs(t, err, ErrMetadata)
}

func TestUpdateScalarRecurrenceByHand(t *testing.T) {
	// B = H = Dk = Dv = 1, s = ln 2, so the decay exp(-s) is 1/2:
	//   (k, v) = (2, 3):  kv = 0      + 6 = 6
	//   (k, v) = (1, 4):  kv = 6/2    + 4 = 7
	//   (k, v) = (-1, 2): kv = 7/2    - 2 = 1.5
	slope := []float64{math.Ln2}
	ks, vs, want := []float64{2, 1, -1}, []float64{3, 4, 2}, []float64{6, 7, 1.5}
	for _, d := range []tensor.DType{tensor.Float64, tensor.Float32, tensor.BFloat16, tensor.Float16} {
		v := newView(t, testMeta(t, 1, 1, 1), d)
		for i := range ks {
			next, err := v.Update(kv4(t, ks[i:i+1], 1, 1, 1, 1), kv4(t, vs[i:i+1], 1, 1, 1, 1), slope)
			require.NoError(t, err)
			assert.Equal(t, []float64{want[i]}, next.KeyValue().Float64s(), "%s token %d", d, i)
			assert.Equal(t, d, next.KeyValue().DType())
			assert.Equal(t, []int{1, 1, 1, 1}, next.KeyValue().Shape())
			v = next
		}
		all, err := newView(t, testMeta(t, 1, 1, 1), d).Update(kv4(t, ks, 1, 1, 3, 1), kv4(t, vs, 1, 1, 3, 1), slope)
		require.NoError(t, err)
		assert.Equal(t, []float64{1.5}, all.KeyValue().Float64s(), "%s, three tokens at once", d)
	}
}

func TestUpdatePerHeadDecayAndOuterProductByHand(t *testing.T) {
	// B=1, H=2, Dk=2, Dv=1, slopes [0, ln 4]: decays 1 and 1/4.
	// head 0: k=[1 2], v=3 -> [[3] [6]];  then k=[0 1], v=1 -> [[3] [7]]
	// head 1: k=[1 0], v=4 -> [[4] [0]];  then k=[0 1], v=8 -> [[1] [8]]
	meta, err := NewMetadata(MetadataConfig{NumHeads: Ptr(2), KeyDim: Ptr(2), ValueDim: Ptr(1)})
	require.NoError(t, err)
	v := newView(t, meta, tensor.Float32)
	key := kv4(t, []float64{1, 2, 0, 1 /* head 0: t0, t1 */, 1, 0, 0, 1 /* head 1 */}, 1, 2, 2, 2)
	val := kv4(t, []float64{3, 1, 4, 8}, 1, 2, 2, 1)
	got, err := v.Update(key, val, []float64{0, math.Log(4)})
	require.NoError(t, err)
	assert.Equal(t, []float64{3, 7, 1, 8}, got.KeyValue().Float64s())

	// kv[i][j] = k_i · v_j: k = [1 2], v = [10 20 30].
	meta, err = NewMetadata(MetadataConfig{NumHeads: Ptr(1), KeyDim: Ptr(2), ValueDim: Ptr(3)})
	require.NoError(t, err)
	got, err = newView(t, meta, tensor.Float64).Update(kv4(t, []float64{1, 2}, 1, 1, 1, 2), kv4(t, []float64{10, 20, 30}, 1, 1, 1, 3), []float64{0.3})
	require.NoError(t, err)
	assert.Equal(t, []int{1, 1, 2, 3}, got.KeyValue().Shape())
	assert.Equal(t, []float64{10, 20, 30, 20, 40, 60}, got.KeyValue().Float64s())
}

// tokens returns key (b,h,t,dk) and value (b,h,t,dv) with wave values.
func tokens(t *testing.T, seed, b, h, tok, dk, dv int) (tensor.Tensor, tensor.Tensor) {
	t.Helper()
	k := testkit.Build(tensor.Float64, []int{b, h, tok, dk}, func(i []int) float64 { return wave(seed, ((i[0]*h+i[1])*tok+i[2])*dk+i[3]) })
	v := testkit.Build(tensor.Float64, []int{b, h, tok, dv}, func(i []int) float64 { return wave(seed+1, ((i[0]*h+i[1])*tok+i[2])*dv+i[3]) })
	return k, v
}

// slice returns tokens [from, to) of a (b, h, t, d) tensor.
func slice(t *testing.T, x tensor.Tensor, from, to int) tensor.Tensor {
	t.Helper()
	b, h, d := x.Dim(0), x.Dim(1), x.Dim(3)
	return testkit.Build(tensor.Float64, []int{b, h, to - from, d}, func(i []int) float64 { return x.At(i[0], i[1], from+i[2], i[3]) })
}

func TestSingleTokenEqualsMultiToken(t *testing.T) {
	const b, h, n, dk, dv = 2, 3, 7, 4, 5
	key, val := tokens(t, 1, b, h, n, dk, dv)
	slopes := []float64{0.5, 0.125, 0.03125}
	for _, tc := range []struct {
		dtype tensor.DType
		tol   float64
	}{{tensor.Float64, 0}, {tensor.Float32, 1e-5}} {
		meta, err := NewMetadata(MetadataConfig{BatchSize: Ptr(b), NumHeads: Ptr(h), KeyDim: Ptr(dk), ValueDim: Ptr(dv)})
		require.NoError(t, err)
		all, err := newView(t, meta, tc.dtype).Update(key, val, slopes)
		require.NoError(t, err)
		for _, splits := range [][]int{{1, 1, 1, 1, 1, 1, 1}, {3, 4}, {5, 1, 1}} {
			v, from := newView(t, meta, tc.dtype), 0
			for _, s := range splits {
				v, err = v.Update(slice(t, key, from, from+s), slice(t, val, from, from+s), slopes)
				require.NoError(t, err)
				from += s
			}
			if tc.tol == 0 {
				assert.Equal(t, all.KeyValue().Float64s(), v.KeyValue().Float64s(), "%s splits %v", tc.dtype, splits)
			} else {
				assert.InDeltaSlice(t, all.KeyValue().Float64s(), v.KeyValue().Float64s(), tc.tol, "%s splits %v", tc.dtype, splits)
			}
		}
	}
}

func TestUpdateMatchesClosedForm(t *testing.T) {
	// After n tokens from zero: kv = Σ_j exp(-s (n-1-j)) k_jᵀ v_j (spec 11.7,
	// with the current token at weight 1).
	const n, dk, dv = 5, 2, 3
	key, val := tokens(t, 4, 1, 1, n, dk, dv)
	s := 0.4
	got, err := newView(t, Metadata{}, tensor.Float64).Update(key, val, []float64{s})
	require.NoError(t, err)
	want := make([]float64, dk*dv)
	for j := 0; j < n; j++ {
		w := math.Exp(-s * float64(n-1-j))
		for a := 0; a < dk; a++ {
			for c := 0; c < dv; c++ {
				want[a*dv+c] += w * key.At(0, 0, j, a) * val.At(0, 0, j, c)
			}
		}
	}
	assert.InDeltaSlice(t, want, got.KeyValue().Float64s(), 1e-13)
}

func TestUpdateConvertsInputs(t *testing.T) {
	// k = 1 + 2^-10 is exact in float16 but 1 in bfloat16; v = 1; s = 0.
	k := kv4(t, []float64{1 + 1.0/1024}, 1, 1, 1, 1)
	one := kv4(t, []float64{1}, 1, 1, 1, 1)
	for _, tc := range []struct {
		dtype tensor.DType
		want  float64
	}{{tensor.Float16, 1 + 1.0/1024}, {tensor.BFloat16, 1}, {tensor.Float32, 1 + 1.0/1024}} {
		got, err := newView(t, Metadata{}, tc.dtype).Update(k, one, []float64{0})
		require.NoError(t, err)
		assert.Equal(t, []float64{tc.want}, got.KeyValue().Float64s(), "%s", tc.dtype)
		// A second token adds the rounded input again.
		got, err = got.Update(k, one, []float64{0})
		require.NoError(t, err)
		assert.Equal(t, []float64{2 * tc.want}, got.KeyValue().Float64s(), "%s", tc.dtype)
	}
}

func TestUpdateKeepsReceiver(t *testing.T) {
	key, val := tokens(t, 2, 2, 1, 1, 2, 2)
	v0 := newView(t, testMeta(t, 2, 1, 2), tensor.Float32)
	v1, err := v0.Update(key, val, []float64{0.1})
	require.NoError(t, err)
	before := v1.KeyValue().Float64s()
	v2, err := v1.Update(key, val, []float64{0.1})
	require.NoError(t, err)
	v3, err := v1.Update(val, key, []float64{5})
	require.NoError(t, err)
	assert.False(t, v0.HasKeyValue(), "the first update does not touch the absent receiver")
	assert.Equal(t, before, v1.KeyValue().Float64s())
	assert.NotEqual(t, v2.KeyValue().Float64s(), v3.KeyValue().Float64s())
	assert.Equal(t, 2, v1.KeyValue().NumChunks(), "one chunk per batch row")
}

func TestUpdateErrors(t *testing.T) {
	meta := testMeta(t, 2, 3, 4)
	v := newView(t, meta, tensor.Float32)
	key, val := tokens(t, 0, 2, 3, 1, 4, 4)
	present, err := v.Update(key, val, []float64{1, 2, 3})
	require.NoError(t, err)
	free := newView(t, Metadata{}, tensor.Float32)
	free, err = free.Update(key, val, []float64{1, 2, 3})
	require.NoError(t, err)
	k5, _ := tokens(t, 0, 2, 3, 1, 5, 4)
	kb, vb := tokens(t, 0, 1, 3, 1, 4, 4)
	k0, v0 := tokens(t, 0, 2, 3, 0, 4, 4)
	k2, _ := tokens(t, 0, 2, 3, 2, 4, 4)
	cases := []struct {
		name string
		fn   func() (View, error)
		is   error
		msg  string
	}{
		{"absent key", func() (View, error) { return v.Update(tensor.Tensor{}, val, []float64{1, 2, 3}) }, ErrShape, "key <absent>"},
		{"token counts differ", func() (View, error) { return v.Update(k2, val, []float64{1, 2, 3}) }, ErrShape, "key [2 3 2 4] and value [2 3 1 4]"},
		{"rank", func() (View, error) {
			return v.Update(testkit.Constant(tensor.Float32, 1, 2, 3, 4), val, []float64{1, 2, 3})
		}, ErrShape, "key [2 3 4]"},
		{"no tokens", func() (View, error) { return v.Update(k0, v0, []float64{1, 2, 3}) }, ErrShape, "want at least one token"},
		{"key dim vs metadata", func() (View, error) { return v.Update(k5, val, []float64{1, 2, 3}) }, ErrIncompatible, "key/value has key dim 5, the metadata has 4"},
		{"value dim vs state", func() (View, error) { return present.Update(val, k5, []float64{1, 2, 3}) }, ErrIncompatible, "value dim 5"},
		{"batch vs metadata", func() (View, error) { return v.Update(kb, vb, []float64{1, 2, 3}) }, ErrIncompatible, "key/value has batch 1, the metadata has 2"},
		{"batch vs state", func() (View, error) { return free.Update(kb, vb, []float64{1, 2, 3}) }, ErrIncompatible, "key/value has batch 1, the key_value state float32[2 3 4 4] has 2"},
		{"slope count", func() (View, error) { return present.Update(key, val, []float64{1, 2}) }, ErrShape, "2 slope rates for 3 heads"},
		{"slope NaN", func() (View, error) { return v.Update(key, val, []float64{1, math.NaN(), 3}) }, ErrSlope, "slope rate of head 1 is NaN"},
		{"slope Inf", func() (View, error) { return v.Update(key, val, []float64{math.Inf(1), 2, 3}) }, ErrSlope, "head 0 is +Inf"},
		{"empty", func() (View, error) { return View{}.Update(key, val, []float64{1, 2, 3}) }, ErrEmpty, "Update on an empty view"},
		{"assign wrong shape", func() (View, error) { return present.UpdateKeyValue(testkit.Constant(tensor.Float32, 1, 2, 3, 4, 5)) }, ErrIncompatible, "key_value has value dim 5"},
		{"assign rank", func() (View, error) { return v.UpdateKeyValue(testkit.Constant(tensor.Float32, 1, 2, 3)) }, ErrShape, "key_value has shape [2 3]"},
		{"assign absent", func() (View, error) { return v.UpdateKeyValue(tensor.Tensor{}) }, ErrShape, "<absent>"},
		{"assign empty view", func() (View, error) { return View{}.UpdateKeyValue(key) }, ErrEmpty, "UpdateKeyValue"},
		{"reset rows range", func() (View, error) { return present.ResetRows(2) }, ErrOutOfRange, "row 2 (batch has rows 0..1)"},
		{"reset rows range while absent", func() (View, error) { return v.ResetRows(5) }, ErrOutOfRange, "row 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.fn()
			require.ErrorIs(t, err, tc.is)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestUpdateKeyValue(t *testing.T) {
	v := newView(t, testMeta(t, 1, 2, 2), tensor.BFloat16)
	kv := testkit.Build(tensor.Float64, []int{1, 2, 2, 2}, func(i []int) float64 { return 1 + float64(i[3])/1024 })
	got, err := v.UpdateKeyValue(kv)
	require.NoError(t, err)
	assert.Equal(t, tensor.BFloat16, got.KeyValue().DType())
	assert.Equal(t, testkit.Filled(8, 1), got.KeyValue().Float64s(), "converted to bfloat16")
	assert.False(t, v.HasKeyValue())
	// The assigned state continues the recurrence: decay 1, add 1·1.
	got, err = got.Update(kv4(t, []float64{1, 0, 1, 0}, 1, 2, 1, 2), kv4(t, []float64{1, 0, 1, 0}, 1, 2, 1, 2), []float64{0, 0})
	require.NoError(t, err)
	assert.Equal(t, []float64{2, 1, 1, 1, 2, 1, 1, 1}, got.KeyValue().Float64s())
}

func TestResetResetRowsAndInsert(t *testing.T) {
	key, val := tokens(t, 3, 2, 1, 2, 2, 2)
	v, err := newView(t, testMeta(t, 2, 1, 2), tensor.Float32).Update(key, val, []float64{0.2})
	require.NoError(t, err)
	state := v.KeyValue().Float64s()

	r, err := v.Reset()
	require.NoError(t, err)
	assert.False(t, r.HasKeyValue())
	assert.Equal(t, tensor.Float32, r.DType())
	assert.True(t, v.HasKeyValue(), "receiver unchanged")

	rr, err := v.ResetRows(0)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(4, 0), state[4:]...), rr.KeyValue().Float64s())
	assert.True(t, rr.KeyValue().SharesChunk(1, v.KeyValue(), 1), "row 1 shared")
	assert.Equal(t, state, v.KeyValue().Float64s())
	same, err := r.ResetRows(1)
	require.NoError(t, err)
	assert.False(t, same.HasKeyValue(), "an absent state stays absent")

	// Insert a one-row state into slot 2 of an absent batch-3 view.
	k1, v1 := tokens(t, 5, 1, 1, 2, 2, 2)
	one1, err := newView(t, testMeta(t, 1, 1, 2), tensor.Float32).Update(k1, v1, []float64{0})
	require.NoError(t, err)
	one, err := newView(t, testMeta(t, 1, 1, 2), tensor.Float32).UpdateKeyValue(testkit.Build(tensor.Float64, []int{1, 1, 2, 2}, func(i []int) float64 { return 5 }))
	require.NoError(t, err)
	dst := newView(t, testMeta(t, 3, 1, 2), tensor.Float32)
	got, err := dst.Insert(one, 2)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(8, 0), testkit.Filled(4, 5)...), got.KeyValue().Float64s())
	assert.True(t, got.KeyValue().SharesChunk(2, one.KeyValue(), 0))
	got, err = got.Insert(one1, 0)
	require.NoError(t, err)
	assert.Equal(t, one1.KeyValue().Float64s(), got.KeyValue().Float64s()[:4])
	// Inserting an absent state zeroes the slot.
	got, err = got.Insert(newView(t, testMeta(t, 1, 1, 2), tensor.Float32), 2)
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(4, 0), got.KeyValue().Float64s()[8:])
	// Absent into absent stays absent.
	got, err = dst.Insert(newView(t, testMeta(t, 1, 1, 2), tensor.Float32), 0)
	require.NoError(t, err)
	assert.False(t, got.HasKeyValue())

	_, err = dst.Insert(one, 3)
	require.ErrorIs(t, err, ErrOutOfRange)
	_, err = newView(t, Metadata{}, tensor.Float32).Insert(one, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	assert.Contains(t, err.Error(), "batch size is unknown")
	_, err = dst.Insert(newView(t, testMeta(t, 1, 1, 2), tensor.Float16), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	wide, err := newView(t, testMeta(t, 1, 1, 3), tensor.Float32).UpdateKeyValue(testkit.Constant(tensor.Float32, 1, 1, 1, 3, 3))
	require.NoError(t, err)
	_, err = dst.Insert(wide, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(View{}, 0)
	require.ErrorIs(t, err, ErrEmpty)
}

func TestSlopeRates(t *testing.T) {
	// H = 4: base = 2^-2. Layer 0 of 1: factor = 1 - 0 + 1e-5.
	got, err := SlopeRates(4, 0, 1)
	require.NoError(t, err)
	f := 1 + 1e-5
	assert.InDeltaSlice(t, []float64{0.25 * f, 0.0625 * f, 0.015625 * f, 0.00390625 * f}, got, 1e-15)
	// H = 8: base = 1/2; layer 2 of 3: factor = 1 - 2/(2+1e-5) + 1e-5.
	got, err = SlopeRates(8, 2, 3)
	require.NoError(t, err)
	f = 1 - 2/(2+1e-5) + 1e-5
	assert.InDelta(t, 0.5*f, got[0], 1e-15)
	assert.InDelta(t, math.Pow(0.5, 8)*f, got[7], 1e-15)
	for _, bad := range [][3]int{{0, 0, 1}, {4, -1, 2}, {4, 2, 2}, {4, 0, 0}} {
		_, err := SlopeRates(bad[0], bad[1], bad[2])
		require.ErrorIs(t, err, ErrSlope, "%v", bad)
	}
}
