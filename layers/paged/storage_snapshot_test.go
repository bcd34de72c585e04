package paged

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// quantizedWrittenView is writtenView (a 6-token prefill in pages 5 and 2,
// a decode token in page 7; head dim 3) stored as st, as the given layer
// of 4.
func quantizedWrittenView(t testing.TB, st Storage, layer int) View {
	t.Helper()
	meta := testMeta(2, 8, 4, 3)
	meta.NumHiddenLayers = 4
	v, err := NewViewStorage(meta, st, layer)
	require.NoError(t, err)
	k, val := kvOf(t, tensor.Float32, 6, 2, 3, 1), kvOf(t, tensor.Float32, 6, 2, 3, -100)
	v, err = v.WritePrefill(k, val, StepMetadata{PrefillLength: 6, PrefillPageTable: []int32{5, 2}})
	require.NoError(t, err)
	x := kvOf(t, tensor.Float32, 1, 2, 3, 7)
	v, err = v.WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{1}, DecodesPageTable: [][]int32{{7}}})
	require.NoError(t, err)
	return v
}

var snapshotStorages = []Storage{
	{DType: tensor.BFloat16, Quantization: tensor.Int8},
	{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 2}, // block min(2, 3) = 2 does not divide 3
	{DType: tensor.Float32, Quantization: tensor.NF4},               // block min(64, 3) = 3, odd rows
}

func assertSameStored(t *testing.T, want, got View) {
	t.Helper()
	assertSameView(t, want, got)
	assert.Equal(t, want.Storage(), got.Storage())
	assert.Equal(t, want.KeyCodes().Bytes(), got.KeyCodes().Bytes())
	assert.Equal(t, want.KeyScales().Bytes(), got.KeyScales().Bytes())
	assert.Equal(t, want.ValueCodes().Bytes(), got.ValueCodes().Bytes())
	assert.Equal(t, want.ValueScales().Bytes(), got.ValueScales().Bytes())
	assert.Equal(t, want.KeyCodes().ChunkLen(), got.KeyCodes().ChunkLen())
	assert.Equal(t, want.ValueScales().ChunkLen(), got.ValueScales().ChunkLen())
}

func TestQuantizedViewSnapshot(t *testing.T) {
	_, err := NewViewStorage(testMeta(2, 8, 4, 3), snapshotStorages[1], 1)
	require.ErrorIs(t, err, ErrQuantization, "block 2 does not divide head dim 3")
	for _, st := range []Storage{snapshotStorages[0], snapshotStorages[2]} {
		t.Run(st.Quantization.String(), func(t *testing.T) {
			v := quantizedWrittenView(t, st, 1)
			b, err := v.MarshalBinary()
			require.NoError(t, err)
			s, err := tensor.UnmarshalSnapshot(b)
			require.NoError(t, err)
			assert.Equal(t, v.KeyCodes().DType(), s.Tensors["key_pages"].DType(), "the file holds the codes")
			assert.Equal(t, st.DType, s.Tensors["value_scales"].DType())
			got, err := UnmarshalView(b)
			require.NoError(t, err)
			assertSameStored(t, v, got)
			// The decoded view keeps working, and stays quantized.
			x := kvOf(t, tensor.Float32, 1, 2, 3, 3)
			m := StepMetadata{DecodesPosition: []int32{6}, DecodesPageTable: [][]int32{{5, 2}}}
			next, err := got.WriteDecodes(x, x, m)
			require.NoError(t, err)
			want, err := v.WriteDecodes(x, x, m)
			require.NoError(t, err)
			assertSameStored(t, want, next)
		})
	}
}

func TestQuantizedCacheSnapshot(t *testing.T) {
	c, err := InitEmpty(4)
	require.NoError(t, err)
	c, err = c.WithView(1, quantizedWrittenView(t, snapshotStorages[0], 1))
	require.NoError(t, err)
	c, err = c.WithView(2, quantizedWrittenView(t, snapshotStorages[2], 2))
	require.NoError(t, err)
	c, err = c.WithView(3, quantizedWrittenView(t, Storage{DType: tensor.BFloat16}, 3))
	require.NoError(t, err)
	b, err := c.MarshalBinary()
	require.NoError(t, err)
	s, err := tensor.UnmarshalSnapshot(b)
	require.NoError(t, err)
	assert.Equal(t, "64", s.Metadata["layers.2.block_size"])
	assert.NotContains(t, s.Metadata, "layers.1.block_size")
	assert.Contains(t, s.Tensors, "layers.1.key_scales")
	assert.NotContains(t, s.Tensors, "layers.3.key_scales")

	got, err := UnmarshalCache(b)
	require.NoError(t, err)
	for i := range 4 {
		want, _ := c.View(i)
		have, _ := got.View(i)
		require.Equal(t, want.IsZero(), have.IsZero())
		if !want.IsZero() {
			assertSameStored(t, want, have)
		}
	}

	edit := func(fn func(s *tensor.Snapshot)) []byte {
		s, err := tensor.UnmarshalSnapshot(b)
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
		"nf4 without block size": {edit(func(s *tensor.Snapshot) { delete(s.Metadata, "layers.2.block_size") }), `NF4 codes with layers.2.block_size ""`},
		"bad block size":         {edit(func(s *tensor.Snapshot) { s.Metadata["layers.2.block_size"] = "-4" }), `layers.2.block_size "-4"`},
		"block not dividing":     {edit(func(s *tensor.Snapshot) { s.Metadata["layers.2.block_size"] = "2" }), "nf4 block size 2 does not divide the head dim 3"},
		"block size on int8":     {edit(func(s *tensor.Snapshot) { s.Metadata["layers.1.block_size"] = "4" }), `layers.1.block_size "4" given with int8 codes`},
		"scales missing":         {edit(func(s *tensor.Snapshot) { delete(s.Tensors, "layers.1.value_scales") }), "int8 codes need layers.1.key_scales and layers.1.value_scales"},
		"scales on values": {edit(func(s *tensor.Snapshot) { s.Tensors["layers.3.key_scales"] = s.Tensors["layers.1.key_scales"] }),
			"given with bfloat16 pages"},
		"stray scales": {edit(func(s *tensor.Snapshot) { s.Tensors["layers.0.key_scales"] = s.Tensors["layers.1.key_scales"] }),
			"do not all belong to the 3 present layers of 4"},
		"codes shape": {edit(func(s *tensor.Snapshot) {
			s.Tensors["layers.2.key_pages"] = tensor.Must(tensor.New(tensor.U8, 2, 8, 4, 3))
		}),
			"want two tensors of one dtype with shape [2 8 4 2]"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := UnmarshalCache(tc.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// FuzzUnmarshalQuantizedCache is FuzzUnmarshalCache seeded with quantized
// caches.
func FuzzUnmarshalQuantizedCache(f *testing.F) {
	c, err := InitEmpty(4)
	require.NoError(f, err)
	c, err = c.WithView(1, quantizedWrittenView(f, snapshotStorages[0], 1))
	require.NoError(f, err)
	c, err = c.WithView(2, quantizedWrittenView(f, snapshotStorages[2], 2))
	require.NoError(f, err)
	b, err := c.MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, ErrSnapshot)
			return
		}
		again, err := got.MarshalBinary()
		require.NoError(t, err)
		back, err := UnmarshalCache(again)
		require.NoError(t, err)
		require.Equal(t, got.Len(), back.Len())
		for i := range got.Len() {
			x, _ := got.View(i)
			y, _ := back.View(i)
			require.Equal(t, x.IsZero(), y.IsZero())
			if !x.IsZero() {
				require.Equal(t, x.Storage(), y.Storage())
				require.True(t, x.KeyPages().Equal(y.KeyPages()))
				require.True(t, x.ValuePages().Equal(y.ValuePages()))
			}
		}
	})
}
