package transformer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// snapshotCache is a cache with data, distinct starts, a view without layer
// index, one with an unusual layer index and an empty view.
func snapshotCache(t testing.TB) Cache {
	t.Helper()
	meta, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 6, NumHiddenLayers: 4, PadTokenID: 3,
		KeyHeads: Ptr(2), ValueHeads: Ptr(1), KeyDim: Ptr(3), ValueDim: Ptr(2), UpdateCausalMask: Ptr(false)})
	require.NoError(t, err)
	c, err := Init(meta, tensor.BFloat16, []int32{0, 1})
	require.NoError(t, err)
	for l := 0; l < 3; l++ {
		v, _ := c.View(l)
		v, err = v.Append(kv(t, 2, l+1, 2, 3, tokenVal(l)), kv(t, 2, l+1, 1, 2, tokenVal(l+5)))
		require.NoError(t, err)
		if l == 1 {
			v.hasLayer = false
		}
		if l == 2 {
			v.layer = -7
		}
		c, err = c.WithView(l, v)
		require.NoError(t, err)
	}
	c, err = c.WithView(3, View{})
	require.NoError(t, err)
	return c
}

func assertSameView(t *testing.T, want, got View) {
	t.Helper()
	require.Equal(t, want.IsEmpty(), got.IsEmpty())
	if want.IsEmpty() {
		return
	}
	assert.True(t, want.Key().Equal(got.Key()))
	assert.True(t, want.Value().Equal(got.Value()))
	assert.Equal(t, want.Index(), got.Index())
	assert.Equal(t, want.Starts(), got.Starts())
	assert.Equal(t, want.Metadata(), got.Metadata())
	wl, wok := want.LayerIndex()
	gl, gok := got.LayerIndex()
	assert.Equal(t, []any{wl, wok}, []any{gl, gok})
	assert.Equal(t, want.Key().ChunkLen(), got.Key().ChunkLen(), "decoded views use the cache chunk layout")
}

func TestCacheSnapshotRoundTrip(t *testing.T) {
	c := snapshotCache(t)
	data, err := c.MarshalBinary()
	require.NoError(t, err)
	back, err := UnmarshalCache(data)
	require.NoError(t, err)
	require.Equal(t, c.Len(), back.Len())
	for l := 0; l < c.Len(); l++ {
		a, _ := c.View(l)
		b, _ := back.View(l)
		assertSameView(t, a, b)
	}
	again, err := back.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, data, again, "encoding is deterministic")

	// The decoded cache keeps working: a write lands at its index.
	v, _ := back.View(0)
	x := kv(t, 2, 1, 2, 3, func(int, int, int, int) float64 { return 1.5 })
	y := kv(t, 2, 1, 1, 2, func(int, int, int, int) float64 { return 2.5 })
	v2, err := v.Append(x, y)
	require.NoError(t, err)
	assert.Equal(t, []float64{1.5, 1.5, 1.5, 1.5, 1.5, 1.5}, pos(t, v2.Key(), 1, 1))

	// Python tools read the layout: check the names and dtypes.
	s, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	assert.Equal(t, "4", s.Metadata["views"])
	assert.Equal(t, "true", s.Metadata["views.3.empty"])
	assert.Equal(t, "-7", s.Metadata["views.2.layer_index"])
	assert.NotContains(t, s.Metadata, "views.1.layer_index")
	assert.Equal(t, tensor.BFloat16, s.Tensors["views.0.key"].DType())
	assert.Equal(t, []int32{1, 1}, s.Int32s["views.0.index"])
	assert.JSONEq(t, `{"batch_size":2,"sequence_length":6,"num_hidden_layers":4,"pad_token_id":3,"num_heads":null,"head_dim":null,
		"key_heads":2,"value_heads":1,"key_dim":3,"value_dim":2,"update_causal_mask":false,"create_attention_bias":true}`, s.Metadata["views.0.metadata"])
}

func TestViewSnapshotRoundTrip(t *testing.T) {
	c := snapshotCache(t)
	for l := 0; l < c.Len(); l++ {
		v, _ := c.View(l)
		data, err := v.MarshalBinary()
		require.NoError(t, err)
		back, err := UnmarshalView(data)
		require.NoError(t, err)
		assertSameView(t, v, back)
	}
	data, err := c.MarshalBinary()
	require.NoError(t, err)
	_, err = UnmarshalView(data)
	require.ErrorIs(t, err, ErrSnapshot)
	assert.Contains(t, err.Error(), `format "kvmesh.transformer.Cache/v1", want "kvmesh.transformer.View/v1"`)
}

func TestSnapshotErrors(t *testing.T) {
	good, err := snapshotCache(t).MarshalBinary()
	require.NoError(t, err)
	edit := func(f func(s *tensor.Snapshot)) []byte {
		s, err := tensor.UnmarshalSnapshot(good)
		require.NoError(t, err)
		f(&s)
		b, err := s.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "shorter than the 8-byte header"},
		{"truncated", good[:len(good)-3], "tensor: bad snapshot"},
		{"no format", edit(func(s *tensor.Snapshot) { delete(s.Metadata, "format") }), `format ""`},
		{"bad count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "x" }), `views count "x"`},
		{"huge count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "1000000000000" }), "views count"},
		{"fewer views", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "3" }), `unexpected metadata entry "views.3.empty"`},
		{"missing view", edit(func(s *tensor.Snapshot) { delete(s.Metadata, "views.1.metadata") }), "view 1 has neither metadata nor an empty mark"},
		{"bad empty mark", edit(func(s *tensor.Snapshot) { s.Metadata["views.3.empty"] = "yes" }), `views.3.empty = "yes"`},
		{"bad metadata json", edit(func(s *tensor.Snapshot) { s.Metadata["views.0.metadata"] = "{" }), "views.0.metadata"},
		{"invalid metadata", edit(func(s *tensor.Snapshot) {
			s.Metadata["views.0.metadata"] = `{"batch_size":0,"sequence_length":6,"key_heads":2,"value_heads":1,"key_dim":3,"value_dim":2}`
		}), "batch_size must be positive"},
		{"bad layer index", edit(func(s *tensor.Snapshot) { s.Metadata["views.0.layer_index"] = "one" }), `views.0.layer_index = "one"`},
		{"missing key", edit(func(s *tensor.Snapshot) { delete(s.Tensors, "views.0.key") }), "must both be present"},
		{"missing index", edit(func(s *tensor.Snapshot) { delete(s.Int32s, "views.2.index") }), "view 2: transformer: bad shape: index has 0 values"},
		{"index past S", edit(func(s *tensor.Snapshot) { s.Int32s["views.0.index"] = []int32{7, 0} }), "index[0] = 7"},
		{"wrong key shape", edit(func(s *tensor.Snapshot) {
			s.Tensors["views.0.key"] = tensor.Must(tensor.New(tensor.BFloat16, 2, 6, 3, 2))
		}), "key has shape [2 6 3 2]"},
		{"extra tensor", edit(func(s *tensor.Snapshot) { s.Tensors["views.9.key"] = tensor.Must(tensor.New(tensor.Float32, 1)) }), `unexpected tensor "views.9.key"`},
		{"extra int32s", edit(func(s *tensor.Snapshot) { s.Int32s["views.3.index"] = []int32{0} }), `unexpected int32 array "views.3.index"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalCache(tc.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func FuzzUnmarshalCache(f *testing.F) {
	good, err := snapshotCache(f).MarshalBinary()
	require.NoError(f, err)
	f.Add(good)
	v, _ := snapshotCache(f).View(0)
	gv, err := v.MarshalBinary()
	require.NoError(f, err)
	f.Add(gv)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, ErrSnapshot)
			return
		}
		// Whatever decodes must encode again and decode to the same bytes.
		again, err := c.MarshalBinary()
		require.NoError(t, err)
		c2, err := UnmarshalCache(again)
		require.NoError(t, err)
		again2, err := c2.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, again, again2)
		_, err = UnmarshalView(data)
		require.Error(t, err)
	})
}
