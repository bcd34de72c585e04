package paged

import (
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writtenView returns layer 1 of testMeta(2, 8, 4, 3) in dtype with a
// 6-token sequence in pages 5 and 2 and one decode token in page 7.
func writtenView(t testing.TB, dtype tensor.DType) View {
	t.Helper()
	v := testView(t, testMeta(2, 8, 4, 3), dtype)
	k, val := kvOf(t, dtype, 6, 2, 3, 1), kvOf(t, dtype, 6, 2, 3, -100)
	v, err := v.WritePrefill(k, val, StepMetadata{PrefillLength: 6, PrefillPageTable: []int32{5, 2}})
	require.NoError(t, err)
	x := kvOf(t, dtype, 1, 2, 3, 7)
	v, err = v.WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{1}, DecodesPageTable: [][]int32{{7}}})
	require.NoError(t, err)
	return v
}

func assertSameView(t *testing.T, want, got View) {
	t.Helper()
	assert.Equal(t, want.Metadata(), got.Metadata())
	assert.Equal(t, want.LayerIndex(), got.LayerIndex())
	assert.True(t, want.KeyPages().Equal(got.KeyPages()), "key pages")
	assert.True(t, want.ValuePages().Equal(got.ValuePages()), "value pages")
	assert.Equal(t, want.KeyPages().ChunkLen(), got.KeyPages().ChunkLen())
}

func TestViewSnapshot(t *testing.T) {
	for _, dt := range []tensor.DType{tensor.Float32, tensor.BFloat16, tensor.Float16, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			v := writtenView(t, dt)
			b, err := v.MarshalBinary()
			require.NoError(t, err)
			got, err := UnmarshalView(b)
			require.NoError(t, err)
			assertSameView(t, v, got)
			// The decoded view keeps working.
			x := kvOf(t, dt, 1, 2, 3, 3)
			next, err := got.WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{6}, DecodesPageTable: [][]int32{{5, 2}}})
			require.NoError(t, err)
			k, _, err := next.Gather([]int32{5, 2}, 7)
			require.NoError(t, err)
			assert.Equal(t, x.Float32s(), row(t, k, 6))
		})
	}
	_, err := View{}.MarshalBinary()
	require.ErrorIs(t, err, ErrAbsentView)
}

func TestCacheSnapshot(t *testing.T) {
	c, err := InitEmpty(4)
	require.NoError(t, err)
	c, err = c.WithView(1, writtenView(t, tensor.BFloat16))
	require.NoError(t, err)
	meta4 := testMeta(2, 8, 4, 3)
	meta4.NumHiddenLayers = 4
	v3, err := NewView(meta4, tensor.Float32, 3) // another dtype and metadata, never written
	require.NoError(t, err)
	c, err = c.WithView(3, v3)
	require.NoError(t, err)

	b, err := c.MarshalBinary()
	require.NoError(t, err)
	got, err := UnmarshalCache(b)
	require.NoError(t, err)
	require.Equal(t, 4, got.Len())
	for i := range 4 {
		want, err := c.View(i)
		require.NoError(t, err)
		have, err := got.View(i)
		require.NoError(t, err)
		require.Equal(t, want.IsZero(), have.IsZero(), "layer %d", i)
		if !want.IsZero() {
			assertSameView(t, want, have)
		}
	}

	empty, err := InitEmpty(0)
	require.NoError(t, err)
	b, err = empty.MarshalBinary()
	require.NoError(t, err)
	back, err := UnmarshalCache(b)
	require.NoError(t, err)
	assert.Equal(t, 0, back.Len())
}

func TestUnmarshalErrors(t *testing.T) {
	v := writtenView(t, tensor.Float32)
	meta := `{"batch_size":2,"num_hidden_layers":2,"num_pages_per_layer":8,"num_pages_per_sequence":4,"max_sequences":16,"page_size":4,"num_kv_heads":2,"kv_head_dim_size":3,"hbm_utilization":0.5}`
	pages := tensor.Must(tensor.New(tensor.Float32, 2, 8, 4, 3))
	snap := func(md map[string]string, tensors map[string]tensor.Tensor) []byte {
		b, err := tensor.Snapshot{Metadata: md, Tensors: tensors}.MarshalBinary()
		require.NoError(t, err)
		return b
	}
	viewTests := []struct {
		name string
		data []byte
		want string
	}{
		{"garbage", []byte("not a snapshot"), "tensor: bad snapshot"},
		{"cache as view", func() []byte { c, _ := InitEmpty(1); b, _ := c.MarshalBinary(); return b }(), `format "kvmesh.paged.cache/v1"`},
		{"layer index", snap(map[string]string{"format": viewFormat, "layer_index": "x", "metadata": meta},
			map[string]tensor.Tensor{"key_pages": pages, "value_pages": pages}), `layer_index "x"`},
		{"layer out of range", snap(map[string]string{"format": viewFormat, "layer_index": "2", "metadata": meta},
			map[string]tensor.Tensor{"key_pages": pages, "value_pages": pages}), "layer 2 of 2 layers"},
		{"bad metadata", snap(map[string]string{"format": viewFormat, "layer_index": "0", "metadata": `{"batch_size":0}`},
			map[string]tensor.Tensor{"key_pages": pages, "value_pages": pages}), "`batch_size` must be positive"},
		{"missing values", snap(map[string]string{"format": viewFormat, "layer_index": "0", "metadata": meta},
			map[string]tensor.Tensor{"key_pages": pages}), "value_pages missing"},
		{"wrong shape", snap(map[string]string{"format": viewFormat, "layer_index": "0", "metadata": meta},
			map[string]tensor.Tensor{"key_pages": pages, "value_pages": tensor.Must(tensor.New(tensor.Float32, 2, 8, 4, 2))}), "want two tensors of one dtype with shape [2 8 4 3]"},
		{"mixed dtypes", snap(map[string]string{"format": viewFormat, "layer_index": "0", "metadata": meta},
			map[string]tensor.Tensor{"key_pages": pages, "value_pages": tensor.Must(tensor.New(tensor.BFloat16, 2, 8, 4, 3))}), "want two tensors of one dtype"},
	}
	for _, tt := range viewTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalView(tt.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tt.want)
		})
	}

	b, err := v.MarshalBinary()
	require.NoError(t, err)
	_, err = UnmarshalCache(b)
	require.ErrorIs(t, err, ErrSnapshot)
	assert.Contains(t, err.Error(), `format "kvmesh.paged.view/v1"`)
	cacheTests := []struct {
		name string
		data []byte
		want string
	}{
		{"layer count", snap(map[string]string{"format": cacheFormat, "num_layers": "70000"}, nil), `num_layers "70000", want 0..65536`},
		{"negative layer count", snap(map[string]string{"format": cacheFormat, "num_layers": "-1"}, nil), `num_layers "-1"`},
		{"stray tensor", snap(map[string]string{"format": cacheFormat, "num_layers": "1"},
			map[string]tensor.Tensor{"layers.3.key_pages": pages}), "do not all belong to the 0 present layers of 1"},
		{"layer beyond count", snap(map[string]string{"format": cacheFormat, "num_layers": "1", "layers.1.metadata": meta},
			map[string]tensor.Tensor{"layers.1.key_pages": pages, "layers.1.value_pages": pages}), "do not all belong"},
		{"bad layer", snap(map[string]string{"format": cacheFormat, "num_layers": "1", "layers.0.metadata": meta},
			map[string]tensor.Tensor{"layers.0.key_pages": pages}), "layer 0: paged: bad snapshot: layers.0.key_pages or layers.0.value_pages missing"},
	}
	for _, tt := range cacheTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := UnmarshalCache(tt.data)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func FuzzUnmarshalCache(f *testing.F) {
	c, err := InitEmpty(3)
	require.NoError(f, err)
	c, err = c.WithView(1, writtenView(f, tensor.BFloat16))
	require.NoError(f, err)
	b, err := c.MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
	f.Add(b[:len(b)/2])
	full, err := Init(testMeta(1, 2, 1, 1), tensor.Float32)
	require.NoError(f, err)
	b, err = full.MarshalBinary()
	require.NoError(f, err)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, ErrSnapshot)
			return
		}
		// Whatever decodes re-encodes to a cache that decodes the same.
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
				require.True(t, x.KeyPages().Equal(y.KeyPages()))
				require.True(t, x.ValuePages().Equal(y.ValuePages()))
				require.Equal(t, x.Metadata(), y.Metadata())
			}
		}
	})
}
