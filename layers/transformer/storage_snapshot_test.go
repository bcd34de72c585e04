package transformer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// quantizedSnapshotCache is a cache whose layer 0 is int8 (bf16 scales),
// layer 1 NF4 with block 4 (key dim 3 and value dim 2: odd rows, and blocks
// min(4, D)), layer 2 unquantized and layer 3 empty, each with data.
func quantizedSnapshotCache(t testing.TB) Cache {
	t.Helper()
	meta, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 6, NumHiddenLayers: 4,
		KeyHeads: Ptr(2), ValueHeads: Ptr(1), KeyDim: Ptr(3), ValueDim: Ptr(2)})
	require.NoError(t, err)
	c := InitEmpty(4)
	for l, st := range []Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4},
		{DType: tensor.Float16},
	} {
		v, err := NewViewStorage(meta, st, []int32{0, 1}, Ptr(l))
		require.NoError(t, err)
		v, err = v.Append(kv(t, 2, l+2, 2, 3, tokenVal(l)), kv(t, 2, l+2, 1, 2, tokenVal(l+5)))
		require.NoError(t, err)
		c, err = c.WithView(l, v)
		require.NoError(t, err)
	}
	return c
}

func TestQuantizedSnapshotRoundTrip(t *testing.T) {
	c := quantizedSnapshotCache(t)
	data, err := c.MarshalBinary()
	require.NoError(t, err)

	// The file holds the stored form: codes, scales and the NF4 block.
	s, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	assert.Equal(t, "int8[2 6 2 3]", s.Tensors["views.0.key"].String())
	assert.Equal(t, "bfloat16[2 6 1 1]", s.Tensors["views.0.value_scales"].String())
	assert.Equal(t, "uint8[2 6 2 2]", s.Tensors["views.1.key"].String())
	assert.Equal(t, "float32[2 6 1 1]", s.Tensors["views.1.value_scales"].String())
	assert.Equal(t, "4", s.Metadata["views.1.block_size"])
	assert.NotContains(t, s.Metadata, "views.0.block_size")
	assert.NotContains(t, s.Tensors, "views.2.key_scales")

	back, err := UnmarshalCache(data)
	require.NoError(t, err)
	for l := range 4 {
		want, _ := c.View(l)
		got, _ := back.View(l)
		assertSameView(t, want, got)
		if want.IsEmpty() {
			continue
		}
		assert.Equal(t, want.Storage(), got.Storage())
		if want.IsQuantized() {
			assert.Equal(t, want.KeyCodes().Bytes(), got.KeyCodes().Bytes(), "layer %d", l)
			assert.Equal(t, want.KeyScales().Bytes(), got.KeyScales().Bytes(), "layer %d", l)
			assert.Equal(t, want.ValueCodes().Bytes(), got.ValueCodes().Bytes(), "layer %d", l)
			assert.Equal(t, want.ValueScales().Bytes(), got.ValueScales().Bytes(), "layer %d", l)
			assert.Equal(t, want.KeyCodes().ChunkLen(), got.KeyCodes().ChunkLen())
			assert.Equal(t, want.KeyScales().ChunkLen(), got.KeyScales().ChunkLen())
		}
		// The decoded view keeps working, and stays quantized.
		next, err := got.Append(kv(t, 2, 1, 2, 3, tokenVal(7)), kv(t, 2, 1, 1, 2, tokenVal(8)))
		require.NoError(t, err)
		assert.Equal(t, want.Storage(), next.Storage())
		wnext, err := want.Append(kv(t, 2, 1, 2, 3, tokenVal(7)), kv(t, 2, 1, 1, 2, tokenVal(8)))
		require.NoError(t, err)
		assert.Equal(t, wnext.Key().Float64s(), next.Key().Float64s())
	}

	v, _ := c.View(1)
	vd, err := v.MarshalBinary()
	require.NoError(t, err)
	got, err := UnmarshalView(vd)
	require.NoError(t, err)
	assertSameView(t, v, got)
	assert.Equal(t, v.KeyCodes().Bytes(), got.KeyCodes().Bytes())
}

func TestQuantizedSnapshotErrors(t *testing.T) {
	data, err := quantizedSnapshotCache(t).MarshalBinary()
	require.NoError(t, err)
	edit := func(fn func(s *tensor.Snapshot)) []byte {
		s, err := tensor.UnmarshalSnapshot(data)
		require.NoError(t, err)
		fn(&s)
		out, err := s.MarshalBinary()
		require.NoError(t, err)
		return out
	}
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"nf4 without block size": {edit(func(s *tensor.Snapshot) { delete(s.Metadata, "views.1.block_size") }), "NF4 codes with block size 0"},
		"bad block size":         {edit(func(s *tensor.Snapshot) { s.Metadata["views.1.block_size"] = "x" }), `views.1.block_size = "x"`},
		"zero block size":        {edit(func(s *tensor.Snapshot) { s.Metadata["views.1.block_size"] = "0" }), `views.1.block_size = "0"`},
		"block size on int8":     {edit(func(s *tensor.Snapshot) { s.Metadata["views.0.block_size"] = "4" }), "block size 4 given with int8 codes"},
		"scales missing":         {edit(func(s *tensor.Snapshot) { delete(s.Tensors, "views.0.value_scales") }), "int8 codes need key and value scales"},
		"scales on values":       {edit(func(s *tensor.Snapshot) { s.Tensors["views.2.key_scales"] = s.Tensors["views.0.key_scales"] }), "given with float16 values"},
		"codes shape": {edit(func(s *tensor.Snapshot) {
			s.Tensors["views.1.key"] = tensor.Must(tensor.New(tensor.U8, 2, 6, 2, 3))
		}), "key has shape [2 6 2 3], want [2 6 2 2]"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := UnmarshalCache(tc.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// FuzzUnmarshalQuantizedCache is FuzzUnmarshalCache seeded with quantized
// caches: decoding never panics, and whatever decodes re-encodes to bytes
// that decode the same.
func FuzzUnmarshalQuantizedCache(f *testing.F) {
	good, err := quantizedSnapshotCache(f).MarshalBinary()
	require.NoError(f, err)
	f.Add(good)
	f.Add(good[:len(good)/2])
	v, _ := quantizedSnapshotCache(f).View(1)
	gv, err := v.MarshalBinary()
	require.NoError(f, err)
	f.Add(gv)
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
		again2, err := c2.MarshalBinary()
		require.NoError(t, err)
		require.Equal(t, again, again2)
		for l := range c.Len() {
			x, _ := c.View(l)
			if !x.IsEmpty() {
				_ = x.Key() // dequantizes without panicking
			}
		}
	})
}
