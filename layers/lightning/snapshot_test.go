package lightning

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// snapshotCache returns a cache with a present state, an absent one, an
// empty layer, and a view without layer index.
func snapshotCache(t testing.TB, dtype tensor.DType) Cache {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{PartitionAxis: json.RawMessage(`{"head_axis":"tp"}`), BatchSize: Ptr(2), NumHeads: Ptr(2), KeyDim: Ptr(3), ValueDim: Ptr(2)})
	require.NoError(t, err)
	c, err := Init(3, m, dtype)
	require.NoError(t, err)
	kv := testkit.Build(tensor.Float64, []int{2, 2, 3, 2}, func(i []int) float64 { return 0.1*float64(i[0]+2*i[1]) - float64(i[2]*i[3]) })
	c, err = c.UpdateKeyValue(0, kv)
	require.NoError(t, err)
	c, err = c.WithView(1, View{})
	require.NoError(t, err)
	v, err := NewView(Metadata{}, dtype, nil)
	require.NoError(t, err)
	v, err = v.UpdateKeyValue(testkit.Constant(tensor.Float64, 1.5, 1, 1, 1, 1))
	require.NoError(t, err)
	c, err = c.WithView(2, v)
	require.NoError(t, err)
	return c
}

func assertSameView(t *testing.T, want, got View) {
	t.Helper()
	require.Equal(t, want.IsEmpty(), got.IsEmpty())
	if want.IsEmpty() {
		return
	}
	require.Equal(t, want.HasKeyValue(), got.HasKeyValue())
	if want.HasKeyValue() {
		assert.True(t, want.KeyValue().Equal(got.KeyValue()), "key_value")
		assert.Equal(t, want.KeyValue().Dim(0), got.KeyValue().NumChunks(), "store layout restored")
	}
	assert.Equal(t, want.DType(), got.DType())
	assert.Equal(t, want.Metadata(), got.Metadata())
	wl, wok := want.LayerIndex()
	gl, gok := got.LayerIndex()
	assert.Equal(t, wok, gok)
	assert.Equal(t, wl, gl)
}

func TestCacheSnapshotRoundTrip(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		for _, c := range []Cache{snapshotCache(t, d), InitEmpty(2), mustInit(t, 2, d)} {
			b, err := c.MarshalBinary()
			require.NoError(t, err)
			back, err := UnmarshalCache(b)
			require.NoError(t, err)
			require.Equal(t, c.Len(), back.Len())
			for l := 0; l < c.Len(); l++ {
				assertSameView(t, view(t, c, l), view(t, back, l))
			}
			b2, err := back.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, b, b2, "encoding is deterministic")
		}
	}
	// A decoded absent state still checks the metadata on its first update.
	back, err := UnmarshalCache(must(mustInit(t, 1, tensor.Float32).MarshalBinary()))
	require.NoError(t, err)
	_, err = back.Update(0, testkit.Constant(tensor.Float32, 1, 3, 2, 1, 3), testkit.Constant(tensor.Float32, 1, 3, 2, 1, 2), []float64{0, 0})
	require.ErrorIs(t, err, ErrIncompatible)
}

func mustInit(t testing.TB, layers int, d tensor.DType) Cache {
	c, err := Init(layers, Metadata{BatchSize: Ptr(2)}, d)
	require.NoError(t, err)
	return c
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestViewSnapshotRoundTrip(t *testing.T) {
	c := snapshotCache(t, tensor.BFloat16)
	for _, l := range []int{0, 2} {
		v := view(t, c, l)
		back, err := UnmarshalView(must(v.MarshalBinary()))
		require.NoError(t, err)
		assertSameView(t, v, back)
	}
	absent, err := NewView(Metadata{}, tensor.Float16, nil)
	require.NoError(t, err)
	back, err := UnmarshalView(must(absent.MarshalBinary()))
	require.NoError(t, err)
	assertSameView(t, absent, back)
	back, err = UnmarshalView(must(View{}.MarshalBinary()))
	require.NoError(t, err)
	assert.True(t, back.IsEmpty())
	_, err = UnmarshalView(must(c.MarshalBinary()))
	require.ErrorIs(t, err, ErrSnapshot)
}

func TestSnapshotErrors(t *testing.T) {
	raw := must(snapshotCache(t, tensor.Float32).MarshalBinary())
	good, err := tensor.UnmarshalSnapshot(raw)
	require.NoError(t, err)
	mutate := func(f func(s *tensor.Snapshot)) []byte {
		m := tensor.Snapshot{Metadata: map[string]string{}, Tensors: map[string]tensor.Tensor{}, Int32s: map[string][]int32{}}
		for k, v := range good.Metadata {
			m.Metadata[k] = v
		}
		for k, v := range good.Tensors {
			m.Tensors[k] = v
		}
		f(&m)
		return must(m.MarshalBinary())
	}
	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"truncated", raw[:len(raw)-1], ""},
		{"wrong format", mutate(func(s *tensor.Snapshot) { s.Metadata["format"] = "kvmesh.mamba.Cache/v1" }), "format"},
		{"bad dtype", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.dtype"] = "int8" }), "views.0.dtype"},
		{"missing dtype", mutate(func(s *tensor.Snapshot) { delete(s.Metadata, "views.2.dtype") }), "views.2.dtype"},
		{"dtype mismatch", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.dtype"] = "float16" }), "key_value is float32, the view's dtype is float16"},
		{"shape vs metadata", mutate(func(s *tensor.Snapshot) {
			s.Tensors["views.0.key_value"] = testkit.Constant(tensor.Float32, 0, 2, 2, 3, 3)
		}), "value dim 3"},
		{"rank", mutate(func(s *tensor.Snapshot) {
			s.Tensors["views.2.key_value"] = testkit.Constant(tensor.Float32, 0, 1, 1, 1)
		}), "key_value has shape [1 1 1]"},
		{"invalid metadata", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.metadata"] = `{"num_heads":-1}` }), "num_heads must be positive"},
		{"bad layer", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.layer_index"] = "1.5" }), "layer_index"},
		{"stray tensor", mutate(func(s *tensor.Snapshot) {
			s.Tensors["views.1.key_value"] = testkit.Constant(tensor.Float32, 0, 1, 1, 1, 1)
		}), "unexpected tensor"},
		{"missing view", mutate(func(s *tensor.Snapshot) { s.Metadata["views"] = "4" }), "view 3 has neither metadata nor an empty mark"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalCache(tc.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func FuzzUnmarshalCache(f *testing.F) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.BFloat16} {
		f.Add(must(snapshotCache(f, d).MarshalBinary()))
	}
	f.Add(must(InitEmpty(2).MarshalBinary()))
	f.Add(must(mustInit(f, 2, tensor.Float16).MarshalBinary()))
	f.Add([]byte{})
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint64(hdr, 2)
	f.Add(append(hdr, '{', '}'))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, ErrSnapshot)
			return
		}
		again, err := c.MarshalBinary()
		require.NoError(t, err)
		c2, err := UnmarshalCache(again)
		require.NoError(t, err)
		require.Equal(t, c.Len(), c2.Len())
		for l := 0; l < c.Len(); l++ {
			assertSameView(t, view(t, c, l), view(t, c2, l))
		}
		_, _ = UnmarshalView(data)
	})
}
