package mamba

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// snapshotCache returns a cache with written states, an empty layer, a
// partition axis and a view without layer index.
func snapshotCache(t testing.TB, dtype tensor.DType) Cache {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: 3, PartitionAxis: json.RawMessage(`{"batch_axis":["fsdp","dp"]}`),
		BatchSize: 2, IntermediateSize: 3, SSMStateSize: 2, ConvKernelSize: 4})
	require.NoError(t, err)
	c, err := Init(m, dtype)
	require.NoError(t, err)
	c, err = c.UpdateConvState(0, testkit.Build(tensor.Float64, []int{2, 3}, func(i []int) float64 { return 0.1 + float64(i[0]+i[1]) }), 3)
	require.NoError(t, err)
	c, err = c.UpdateSSMState(0, testkit.Build(tensor.Float64, []int{2, 3, 2}, func(i []int) float64 { return float64(i[0]) - 0.3*float64(i[2]) }))
	require.NoError(t, err)
	c, err = c.WithView(1, View{})
	require.NoError(t, err)
	v, err := NewView(m, dtype, nil)
	require.NoError(t, err)
	v, err = v.UpdateSSMState(testkit.Constant(tensor.Float64, 1.5, 2, 3, 2))
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
	assert.True(t, want.ConvStates().Equal(got.ConvStates()), "conv_states")
	assert.True(t, want.SSMStates().Equal(got.SSMStates()), "ssm_states")
	assert.Equal(t, want.Positions(), got.Positions())
	assert.Equal(t, want.Metadata(), got.Metadata())
	wl, wok := want.LayerIndex()
	gl, gok := got.LayerIndex()
	assert.Equal(t, wok, gok)
	assert.Equal(t, wl, gl)
	assert.Equal(t, want.ConvStates().Dim(0), got.ConvStates().NumChunks(), "store layout restored")
}

func TestCacheSnapshotRoundTrip(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		c := snapshotCache(t, d)
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

		// The decoded cache works like the original.
		u, err := back.UpdateConvState(0, testkit.Constant(tensor.Float32, 2, 2, 3), 3)
		require.NoError(t, err)
		assert.Equal(t, testkit.Filled(6, 2), testkit.Column(view(t, u, 0).ConvStates(), 3))
	}
}

func TestViewSnapshotRoundTrip(t *testing.T) {
	c := snapshotCache(t, tensor.BFloat16)
	for _, l := range []int{0, 2} {
		v := view(t, c, l)
		b, err := v.MarshalBinary()
		require.NoError(t, err)
		back, err := UnmarshalView(b)
		require.NoError(t, err)
		assertSameView(t, v, back)
	}
	b, err := View{}.MarshalBinary()
	require.NoError(t, err)
	back, err := UnmarshalView(b)
	require.NoError(t, err)
	assert.True(t, back.IsEmpty())

	cb, err := c.MarshalBinary()
	require.NoError(t, err)
	_, err = UnmarshalView(cb)
	require.ErrorIs(t, err, ErrSnapshot)
	assert.Contains(t, err.Error(), "format")
}

func TestSnapshotErrors(t *testing.T) {
	c := snapshotCache(t, tensor.Float32)
	raw, err := c.MarshalBinary()
	require.NoError(t, err)
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
		for k, v := range good.Int32s {
			m.Int32s[k] = v
		}
		f(&m)
		b, err := m.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"truncated", raw[:len(raw)-3], ""},
		{"garbage", []byte("not a snapshot"), ""},
		{"wrong format", mutate(func(s *tensor.Snapshot) { s.Metadata["format"] = "kvmesh.transformer.Cache/v1" }), "format"},
		{"bad count", mutate(func(s *tensor.Snapshot) { s.Metadata["views"] = "-1" }), "views count"},
		{"missing view", mutate(func(s *tensor.Snapshot) { s.Metadata["views"] = "4" }), "view 3 has neither metadata nor an empty mark"},
		{"bad metadata json", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.metadata"] = "{" }), "views.0.metadata"},
		{"invalid metadata", mutate(func(s *tensor.Snapshot) {
			s.Metadata["views.0.metadata"] = `{"num_hidden_layers":3,"batch_size":2,"intermediate_size":3,"ssm_state_size":2,"conv_kernel_size":0}`
		}), "conv_kernel_size must be positive"},
		{"wrong conv shape", mutate(func(s *tensor.Snapshot) {
			s.Tensors["views.0.conv_states"] = testkit.Constant(tensor.Float32, 0, 2, 3, 3)
		}), "conv_states"},
		{"missing ssm", mutate(func(s *tensor.Snapshot) { delete(s.Tensors, "views.0.ssm_states") }), "ssm_states"},
		{"mixed dtypes", mutate(func(s *tensor.Snapshot) {
			s.Tensors["views.0.ssm_states"] = testkit.Constant(tensor.Float16, 0, 2, 3, 2)
		}), "want one dtype"},
		{"positions length", mutate(func(s *tensor.Snapshot) { s.Int32s["views.0.positions"] = []int32{0} }), "positions has 1 values"},
		{"bad layer index", mutate(func(s *tensor.Snapshot) { s.Metadata["views.0.layer_index"] = "x" }), "layer_index"},
		{"bad empty mark", mutate(func(s *tensor.Snapshot) { s.Metadata["views.1.empty"] = "yes" }), "views.1.empty"},
		{"extra metadata", mutate(func(s *tensor.Snapshot) { s.Metadata["views.9.metadata"] = "{}" }), "unexpected metadata entry"},
		{"extra tensor", mutate(func(s *tensor.Snapshot) { s.Tensors["views.1.conv_states"] = testkit.Constant(tensor.Float32, 0, 1) }), "unexpected tensor"},
		{"extra ints", mutate(func(s *tensor.Snapshot) { s.Int32s["x"] = []int32{1} }), "unexpected int32 array"},
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
		b, err := snapshotCache(f, d).MarshalBinary()
		require.NoError(f, err)
		f.Add(b)
	}
	b, err := InitEmpty(2).MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
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
		// Anything accepted re-encodes and decodes to the same cache.
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
