package transformer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestInit(t *testing.T) {
	meta := testMeta(t, 2, 8, 2, 4, 3)
	c, err := Init(meta, tensor.BFloat16, []int32{1, 2})
	require.NoError(t, err)
	require.Equal(t, 3, c.Len())
	for l := 0; l < 3; l++ {
		v, err := c.View(l)
		require.NoError(t, err)
		li, ok := v.LayerIndex()
		assert.True(t, ok)
		assert.Equal(t, l, li)
		assert.Equal(t, []int32{1, 2}, v.Starts())
		assert.Equal(t, []int32{0, 0}, v.Index())
		assert.True(t, v.Key().HasShape(2, 8, 2, 4))
		assert.Equal(t, tensor.BFloat16, v.DType())
	}
	_, err = c.View(3)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "layer 3 (cache has layers 0..2)")
	_, err = c.View(-1)
	require.ErrorIs(t, err, ErrOutOfRange)

	_, err = Init(meta, tensor.DType(9), nil)
	require.ErrorIs(t, err, ErrDType)
	_, err = Init(meta, tensor.Float32, []int32{1})
	require.ErrorIs(t, err, ErrShape)
	_, err = Init(Metadata{BatchSize: 1}, tensor.Float32, nil)
	require.ErrorIs(t, err, ErrMetadata)
	zero, err := Init(testMeta(t, 1, 1, 1, 1, 0), tensor.Float32, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, zero.Len())
}

func TestInitEmptyAndWithView(t *testing.T) {
	c := InitEmpty(2)
	require.Equal(t, 2, c.Len())
	v, err := c.View(1)
	require.NoError(t, err)
	assert.True(t, v.IsEmpty())
	assert.Equal(t, "TransformerCache(views=[TransformerCacheView(empty), TransformerCacheView(empty)])", c.String())
	assert.Panics(t, func() { InitEmpty(-1) })

	full, err := NewView(testMeta(t, 1, 4, 1, 1, 2), tensor.Float32, nil, Ptr(1))
	require.NoError(t, err)
	c2, err := c.WithView(1, full)
	require.NoError(t, err)
	got, _ := c2.View(1)
	assert.False(t, got.IsEmpty())
	old, _ := c.View(1)
	assert.True(t, old.IsEmpty(), "WithView does not change its receiver")
	_, err = c.WithView(2, full)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "layer 2")

	_, err = c.InsertIndex([]int32{1}, 0)
	require.ErrorIs(t, err, ErrEmpty)
	assert.Contains(t, err.Error(), "layer 0 is empty")
}

// prefilled returns a one-layer-per-meta cache whose rows hold n tokens of
// write w.
func prefilled(t *testing.T, meta Metadata, n, w int) Cache {
	t.Helper()
	c, err := Init(meta, tensor.Float32, nil)
	require.NoError(t, err)
	for l := 0; l < c.Len(); l++ {
		v, _ := c.View(l)
		x := kv(t, meta.BatchSize, n, meta.KeyHeads, meta.KeyDim, tokenVal(w+l))
		v, err = v.Append(x, x)
		require.NoError(t, err)
		c, err = c.WithView(l, v)
		require.NoError(t, err)
	}
	return c
}

func TestInsertSharesStorage(t *testing.T) {
	const S, H, D = 8, 2, 2 // C = 8: one chunk per row
	dec := testMeta(t, 3, S, H, D, 2)
	pre := testMeta(t, 1, S, H, D, 2)
	decode := prefilled(t, dec, 2, 10)
	prompt, err := Init(pre, tensor.Float32, []int32{1})
	require.NoError(t, err)
	for l := 0; l < 2; l++ {
		v, _ := prompt.View(l)
		x := kv(t, 1, 5, H, D, tokenVal(50+l))
		v, err = v.Append(x, x)
		require.NoError(t, err)
		prompt, err = prompt.WithView(l, v)
		require.NoError(t, err)
	}

	merged, err := decode.Insert(prompt, 1)
	require.NoError(t, err)
	for l := 0; l < 2; l++ {
		mv, _ := merged.View(l)
		pv, _ := prompt.View(l)
		dv, _ := decode.View(l)
		assert.Equal(t, []int32{2, 5, 2}, mv.Index())
		assert.Equal(t, []int32{0, 1, 0}, mv.Starts())
		assert.True(t, mv.Key().SharesChunk(1, pv.Key(), 0), "row 1 shares the prompt's chunk")
		assert.True(t, mv.Value().SharesChunk(1, pv.Value(), 0))
		assert.True(t, mv.Key().SharesChunk(0, dv.Key(), 0), "other rows keep their chunks")
		assert.True(t, mv.Key().SharesChunk(2, dv.Key(), 2))
		assert.Equal(t, dv.Metadata(), mv.Metadata(), "the receiver's metadata is kept")
		li, _ := mv.LayerIndex()
		assert.Equal(t, l, li)
		assert.Equal(t, []int32{2, 2, 2}, dv.Index(), "Insert does not change its receiver")
	}

	// Later writes to either side do not affect the other.
	mv, _ := merged.View(0)
	pv, _ := prompt.View(0)
	promptSeen := visible(t, pv.Key(), pv.Index())
	x := kv(t, 3, 1, H, D, tokenVal(7))
	mv2, err := mv.Append(x, x)
	require.NoError(t, err)
	y := kv(t, 1, 2, H, D, tokenVal(8))
	pv2, err := pv.Append(y, y)
	require.NoError(t, err)
	assert.Equal(t, token(t, x, 1, 0), pos(t, mv2.Key(), 1, 5))
	assert.Equal(t, token(t, y, 0, 0), pos(t, pv2.Key(), 0, 5))
	assert.Equal(t, token(t, y, 0, 1), pos(t, pv2.Key(), 0, 6))
	assert.Equal(t, promptSeen, visible(t, pv.Key(), pv.Index()))
	assert.Equal(t, promptSeen[0], visible(t, mv2.Key(), []int32{0, 5, 0})[1], "the merged row still holds the prompt")
	assert.Equal(t, promptSeen[0], visible(t, pv2.Key(), []int32{5})[0])
}

func TestInsertErrors(t *testing.T) {
	dec := testMeta(t, 2, 8, 2, 2, 1)
	c, err := Init(dec, tensor.Float32, nil)
	require.NoError(t, err)
	one, err := Init(testMeta(t, 1, 8, 2, 2, 1), tensor.Float32, nil)
	require.NoError(t, err)
	cases := []struct {
		name     string
		other    Cache
		slot     int
		sentinel error
		want     string
	}{
		{"slot past batch", one, 2, ErrOutOfRange, "slot 2 with 1 rows needs rows [2, 3), batch has 2 rows"},
		{"negative slot", one, -1, ErrOutOfRange, "slot -1"},
		{"too many rows", mustInit(t, testMeta(t, 3, 8, 2, 2, 1), tensor.Float32), 0, ErrOutOfRange, "slot 0 with 3 rows"},
		{"sequence length", mustInit(t, testMeta(t, 1, 16, 2, 2, 1), tensor.Float32), 0, ErrIncompatible, "key float32[1 16 2 2]"},
		{"heads", mustInit(t, testMeta(t, 1, 8, 1, 2, 1), tensor.Float32), 0, ErrIncompatible, "float32[1 8 1 2]"},
		{"dtype", mustInit(t, testMeta(t, 1, 8, 2, 2, 1), tensor.BFloat16), 0, ErrIncompatible, "bfloat16[1 8 2 2]"},
		{"layers", mustInit(t, testMeta(t, 1, 8, 2, 2, 2), tensor.Float32), 0, ErrIncompatible, "a cache of 2 layers into one of 1 layers"},
		{"empty layer", InitEmpty(1), 0, ErrEmpty, "Insert: layer 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Insert(tc.other, tc.slot)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func mustInit(t *testing.T, m Metadata, d tensor.DType) Cache {
	t.Helper()
	c, err := Init(m, d, nil)
	require.NoError(t, err)
	return c
}

func TestInsertIndexAndStarts(t *testing.T) {
	meta := testMeta(t, 4, 8, 1, 2, 2)
	c := prefilled(t, meta, 3, 1)
	ci, err := c.InsertIndex([]int32{5, 0}, 1)
	require.NoError(t, err)
	cs, err := ci.InsertStarts([]int32{2}, 3)
	require.NoError(t, err)
	for l := 0; l < 2; l++ {
		v, _ := cs.View(l)
		assert.Equal(t, []int32{3, 5, 0, 3}, v.Index())
		assert.Equal(t, []int32{0, 0, 0, 2}, v.Starts())
		orig, _ := c.View(l)
		assert.Equal(t, []int32{3, 3, 3, 3}, orig.Index(), "the receiver is unchanged")
		assert.Equal(t, []int32{0, 0, 0, 0}, orig.Starts())
		// Positions 3 and 4 of row 1 are now visible and read as zeros.
		assert.Equal(t, zeros(2), pos(t, v.Key(), 1, 4))
	}

	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"index slot past batch", func() error { _, err := c.InsertIndex([]int32{1, 1}, 3); return err }, "slot 3 with 2 rows needs rows [3, 5), batch has 4 rows"},
		{"index negative slot", func() error { _, err := c.InsertIndex([]int32{1}, -1); return err }, "slot -1"},
		{"index past S", func() error { _, err := c.InsertIndex([]int32{9}, 0); return err }, "index[0] = 9 for slot 0, want a position in [0, 8]"},
		{"negative index", func() error { _, err := c.InsertIndex([]int32{0, -1}, 2); return err }, "index[1] = -1 for slot 3"},
		{"starts slot past batch", func() error { _, err := c.InsertStarts([]int32{1}, 4); return err }, "slot 4 with 1 rows"},
		{"starts past S", func() error { _, err := c.InsertStarts([]int32{10}, 0); return err }, "starts[0] = 10"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, ErrOutOfRange)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestPureRoundTrip(t *testing.T) {
	meta := testMeta(t, 2, 8, 1, 2, 3)
	c := prefilled(t, meta, 3, 1)
	c, err := c.InsertStarts([]int32{1, 2}, 0)
	require.NoError(t, err)
	// Make the last layer carry no layer index, and layer 1 an unusual one.
	v1, _ := c.View(1)
	v1.layer = 9
	c, _ = c.WithView(1, v1)
	v2, _ := c.View(2)
	v2.hasLayer = false
	c, _ = c.WithView(2, v2)

	p, pm := c.ToPure()
	require.Len(t, p, 3)
	assert.Equal(t, meta, pm)
	assert.Equal(t, []int32{3, 3}, p[0].Index)
	assert.Equal(t, []int32{1, 2}, p[0].Starts)
	assert.Equal(t, Ptr(0), p[0].LayerIndex)
	assert.Equal(t, Ptr(9), p[1].LayerIndex)
	assert.Nil(t, p[2].LayerIndex)

	back, err := FromPure(p, pm)
	require.NoError(t, err)
	require.Equal(t, 3, back.Len())
	for l := 0; l < 3; l++ {
		a, _ := c.View(l)
		b, _ := back.View(l)
		al, aok := a.LayerIndex()
		bl, bok := b.LayerIndex()
		assert.Equal(t, []any{al, aok}, []any{bl, bok}, "layer %d keeps its layer index", l)
		assert.Equal(t, a.Index(), b.Index())
		assert.Equal(t, a.Starts(), b.Starts())
		assert.True(t, b.Key().SharesChunk(0, a.Key(), 0), "ToPure/FromPure share storage")
		assert.True(t, a.Key().Equal(b.Key()))
	}

	// Dense tensors are re-chunked into the cache layout.
	dense := Pure{{
		Key:    tensor.Must(tensor.FromFloat64s(tensor.Float32, seq(2*8*1*2), 2, 8, 1, 2)),
		Value:  tensor.Must(tensor.FromFloat64s(tensor.Float32, seq(2*8*1*2), 2, 8, 1, 2)),
		Index:  []int32{8, 4},
		Starts: []int32{0, 0},
	}, {}}
	dc, err := FromPure(dense, meta)
	require.NoError(t, err)
	dv, _ := dc.View(0)
	assert.Equal(t, 8*2, dv.Key().ChunkLen())
	assert.Equal(t, seq(32), dv.Key().Float64s())
	empty, _ := dc.View(1)
	assert.True(t, empty.IsEmpty())
	_, ok := dv.LayerIndex()
	assert.False(t, ok)

	// An empty view round-trips as a zero PureView.
	p2, _ := dc.ToPure()
	assert.True(t, p2[1].Key.IsZero())

	bad := func(f func(pv *PureView)) Pure { pv := dense[0]; f(&pv); return Pure{pv} }
	for _, tc := range []struct {
		p        Pure
		sentinel error
		want     string
	}{
		{bad(func(pv *PureView) { pv.Index = []int32{1} }), ErrShape, "layer 0: transformer: bad shape: index has 1 values"},
		{bad(func(pv *PureView) { pv.Index = []int32{1, 9} }), ErrOutOfRange, "index[1] = 9"},
		{bad(func(pv *PureView) { pv.Starts = nil }), ErrShape, "starts has 0 values"},
		{bad(func(pv *PureView) { pv.Key = tensor.Must(tensor.New(tensor.Float32, 2, 8, 2, 1)) }), ErrShape, "key has shape [2 8 2 1], want [2 8 1 2]"},
		{bad(func(pv *PureView) { pv.Value = tensor.Must(tensor.New(tensor.Float32, 2, 8, 1, 3)) }), ErrShape, "value has shape [2 8 1 3]"},
		{bad(func(pv *PureView) { pv.Value = tensor.Must(tensor.New(tensor.Float16, 2, 8, 1, 2)) }), ErrDType, "key is float32, value is float16"},
		{bad(func(pv *PureView) { pv.Value = tensor.Tensor{} }), ErrDType, "must both be present"},
	} {
		_, err := FromPure(tc.p, meta)
		require.ErrorIs(t, err, tc.sentinel)
		assert.Contains(t, err.Error(), tc.want)
	}
	_, err = FromPure(dense, Metadata{})
	require.ErrorIs(t, err, ErrMetadata)
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i)
	}
	return out
}
