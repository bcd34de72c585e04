package snapshot

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// ramp is a float32 tensor of shape holding 0, 0.5, 1, ...
func ramp(shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	x := make([]float64, n)
	for i := range x {
		x[i] = float64(i) / 2
	}
	return tensor.Must(tensor.FromFloat64s(tensor.Float32, x, shape...))
}

// marshal encodes a view or cache, failing t if it cannot.
func marshal(t *testing.T, m interface{ MarshalBinary() ([]byte, error) }) []byte {
	t.Helper()
	data, err := m.MarshalBinary()
	require.NoError(t, err)
	return data
}

// describe describes data, failing t if it cannot.
func describe(t *testing.T, data []byte) Info {
	t.Helper()
	f, err := Describe(data)
	require.NoError(t, err)
	return f
}

// text is f's text summary.
func text(t *testing.T, f Info) string {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, f.WriteText(&b))
	return b.String()
}

// tensorsByName indexes a snapshot's tensor table.
func tensorsByName(f Info) map[string]Tensor {
	m := map[string]Tensor{}
	for _, t := range f.Tensors {
		m[t.Name] = t
	}
	return m
}

// checkTable checks the tensor table's total and that it lists exactly the
// entries of data, with their dtypes, shapes and sizes.
func checkTable(t *testing.T, f Info, data []byte) {
	t.Helper()
	s, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	assert.Len(t, f.Tensors, len(s.Tensors)+len(s.Int32s))
	var total int64
	byName := tensorsByName(f)
	for name, x := range s.Tensors {
		assert.Equal(t, Tensor{name, x.DType().SafetensorsName(), x.Shape(), int64(x.NumBytes())}, byName[name])
		total += int64(x.NumBytes())
	}
	for name, a := range s.Int32s {
		assert.Equal(t, Tensor{name, "I32", []int{len(a)}, int64(4 * len(a))}, byName[name])
		total += int64(4 * len(a))
	}
	assert.Equal(t, total, f.TensorBytes)
	assert.Equal(t, int64(len(data)), f.FileBytes)
}

func transformerMeta(t *testing.T, layers int) transformer.Metadata {
	t.Helper()
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: layers,
		NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(4)})
	require.NoError(t, err)
	return meta
}

// A transformer cache of three layers, the middle one empty, layer 0
// written three tokens past different starts; stored plain, int8 and NF4.
func TestDescribeTransformerCache(t *testing.T) {
	for _, st := range []transformer.Storage{{DType: tensor.Float32}, {DType: tensor.Float32, Quantization: tensor.Int8},
		{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 2}} {
		t.Run(quantName(st.Quantization), func(t *testing.T) {
			meta := transformerMeta(t, 3)
			c, err := transformer.InitStorage(meta, st, []int32{0, 2})
			require.NoError(t, err)
			v0, err := c.View(0)
			require.NoError(t, err)
			v0, err = v0.Append(ramp(2, 3, 2, 4), ramp(2, 3, 2, 4))
			require.NoError(t, err)
			c, err = c.WithView(0, v0)
			require.NoError(t, err)
			c, err = c.WithView(1, transformer.View{})
			require.NoError(t, err)
			data := marshal(t, c)

			f := describe(t, data)
			assert.Empty(t, f.File, "the file name is the caller's")
			assert.Equal(t, transformer.CacheSnapshotFormat, f.Format)
			assert.Equal(t, "transformer", f.Kind)
			assert.Equal(t, "cache", f.Object)
			assert.Equal(t, 3, f.NumViews)
			assert.Equal(t, []int{1}, f.EmptyViews)
			require.Len(t, f.Views, 3)
			assert.Equal(t, View{Position: 1, Empty: true}, f.Views[1])
			for _, i := range []int{0, 2} {
				v, err := c.View(i)
				require.NoError(t, err)
				got := f.Views[i]
				assert.Equal(t, i, got.Position)
				assert.False(t, got.Empty)
				require.NotNil(t, got.LayerIndex)
				assert.Equal(t, i, *got.LayerIndex)
				assert.Equal(t, st.DType.String(), got.DType)
				assert.Equal(t, 2, got.BatchSize)
				assert.Equal(t, 8, got.SequenceLength)
				assert.Equal(t, 2, got.KVHeads)
				assert.Equal(t, 4, got.HeadDim)
				assert.Equal(t, quantName(st.Quantization), got.Quantization)
				if st.Quantization == tensor.NF4 {
					assert.Equal(t, 2, got.BlockSize)
				} else {
					assert.Zero(t, got.BlockSize)
				}
				assert.Equal(t, v.Index(), got.Index)
				assert.Equal(t, v.Starts(), got.Starts)
				var m transformer.Metadata
				require.NoError(t, json.Unmarshal(got.Metadata, &m))
				assert.Equal(t, meta, m)
			}
			assert.Equal(t, []int32{3, 3}, f.Views[0].Index, "layer 0 wrote three tokens in each row")
			assert.Equal(t, []int32{0, 0}, f.Views[2].Index)

			byName := tensorsByName(f)
			key := byName["views.0.key"]
			switch st.Quantization {
			case tensor.None:
				assert.Equal(t, Tensor{"views.0.key", "F32", []int{2, 8, 2, 4}, 2 * 8 * 2 * 4 * 4}, key)
				assert.NotContains(t, byName, "views.0.key_scales")
			case tensor.Int8:
				assert.Equal(t, Tensor{"views.0.key", "I8", []int{2, 8, 2, 4}, 2 * 8 * 2 * 4}, key)
				assert.Equal(t, Tensor{"views.0.key_scales", "F32", []int{2, 8, 2, 1}, 2 * 8 * 2 * 4}, byName["views.0.key_scales"])
			case tensor.NF4:
				assert.Equal(t, Tensor{"views.0.key", "U8", []int{2, 8, 2, 2}, 2 * 8 * 2 * 2}, key)
				assert.Equal(t, Tensor{"views.0.key_scales", "BF16", []int{2, 8, 2, 2}, 2 * 8 * 2 * 2 * 2}, byName["views.0.key_scales"])
			}
			assert.NotContains(t, byName, "views.1.key", "an empty view stores no tensors")
			checkTable(t, f, data)

			out := text(t, f)
			for _, want := range []string{"format   kvmesh.transformer.Cache/v1 (transformer cache)", "views    3, 1 empty: 1",
				"view 0   layer 0: batch 2, sequence length 8, 2 kv heads, head dim 4", "index [3 3], starts [0 2]", "view 1   empty",
				"views.0.key ", "total "} {
				assert.Contains(t, out, want)
			}
			if st.Quantization != tensor.None {
				assert.Contains(t, out, "stored "+quantName(st.Quantization))
			}
		})
	}
}

// A paged cache with an absent layer, plain and NF4, and a paged view.
func TestDescribePaged(t *testing.T) {
	meta := paged.Metadata{BatchSize: 3, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.9}
	for _, st := range []paged.Storage{{DType: tensor.Float32}, {DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4}} {
		t.Run(quantName(st.Quantization), func(t *testing.T) {
			c, err := paged.InitStorage(meta, st)
			require.NoError(t, err)
			c, err = c.WithView(1, paged.View{})
			require.NoError(t, err)
			data := marshal(t, c)
			v0, err := c.View(0)
			require.NoError(t, err)
			vdata := marshal(t, v0)

			f, fv := describe(t, data), describe(t, vdata)
			assert.Equal(t, paged.CacheSnapshotFormat, f.Format)
			assert.Equal(t, "paged", f.Kind)
			assert.Equal(t, "cache", f.Object)
			assert.Equal(t, 2, f.NumViews)
			assert.Equal(t, []int{1}, f.EmptyViews)
			assert.Equal(t, paged.ViewSnapshotFormat, fv.Format)
			assert.Equal(t, "view", fv.Object)
			assert.Equal(t, 1, fv.NumViews)
			assert.Empty(t, fv.EmptyViews)
			for _, got := range []View{f.Views[0], fv.Views[0]} {
				require.NotNil(t, got.LayerIndex)
				assert.Equal(t, 0, *got.LayerIndex)
				assert.Equal(t, "float32", got.DType)
				assert.Equal(t, meta.NumPagesPerLayer, got.Pages)
				assert.Equal(t, meta.PageSize, got.PageSize)
				assert.Equal(t, meta.NumPagesPerSequence, got.PagesPerSequence)
				assert.Equal(t, meta.MaxSequences, got.MaxSequenceLength)
				assert.Equal(t, meta.NumKVHeads, got.KVHeads)
				assert.Equal(t, meta.KVHeadDimSize, got.HeadDim)
				assert.Equal(t, meta.BatchSize, got.BatchSize)
				assert.Equal(t, quantName(st.Quantization), got.Quantization)
				var m paged.Metadata
				require.NoError(t, json.Unmarshal(got.Metadata, &m))
				assert.Equal(t, meta, m)
			}
			assert.Equal(t, View{Position: 1, Empty: true}, f.Views[1])
			byName := tensorsByName(f)
			if st.Quantization == tensor.NF4 {
				assert.Equal(t, 4, f.Views[0].BlockSize)
				assert.Equal(t, Tensor{"layers.0.key_pages", "U8", []int{2, 9, 4, 4}, 2 * 9 * 4 * 4}, byName["layers.0.key_pages"])
				assert.Equal(t, Tensor{"layers.0.key_scales", "F32", []int{2, 9, 4, 2}, 2 * 9 * 4 * 2 * 4}, byName["layers.0.key_scales"])
			} else {
				assert.Equal(t, Tensor{"layers.0.key_pages", "F32", []int{2, 9, 4, 8}, 2 * 9 * 4 * 8 * 4}, byName["layers.0.key_pages"])
			}
			assert.Len(t, f.Tensors, len(fv.Tensors), "the absent layer stores nothing")
			checkTable(t, f, data)
			checkTable(t, fv, vdata)

			out := text(t, f)
			assert.Contains(t, out, "view 0   layer 0: 9 pages of 4 tokens (page 0 the dummy), 2 kv heads, head dim 8")
			assert.Contains(t, out, "batch 3, 4 pages per sequence (16 tokens)")
			assert.Contains(t, out, "view 1   empty")
			assert.Contains(t, text(t, fv), "views    1 (a single view)")
		})
	}
}

// Mamba and Mamba2 caches with an empty view and written states; a
// lightning cache with one written and one unwritten state, and views.
func TestDescribeRecurrent(t *testing.T) {
	mmeta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 3, ConvKernelSize: 3})
	require.NoError(t, err)
	mc, err := mamba.Init(mmeta, tensor.Float32)
	require.NoError(t, err)
	mc, err = mc.UpdateConvState(0, ramp(2, 4), 1)
	require.NoError(t, err)
	mc, err = mc.WithView(1, mamba.View{})
	require.NoError(t, err)

	m2meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 8, NumHeads: 2, HeadDim: 4,
		StateSize: 3, ConvKernelSize: 4, NGroups: 1})
	require.NoError(t, err)
	m2, err := mamba2.Init(m2meta, tensor.BFloat16)
	require.NoError(t, err)
	m2, err = m2.UpdateSeq(5)
	require.NoError(t, err)
	m2, err = m2.WithView(0, mamba2.View{})
	require.NoError(t, err)

	b, h, d := 2, 2, 3
	lmeta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &b, NumHeads: &h, HeadDim: &d})
	require.NoError(t, err)
	lc, err := lightning.Init(2, lmeta, tensor.Float64)
	require.NoError(t, err)
	lc, err = lc.Update(1, ramp(2, 2, 1, 3), ramp(2, 2, 1, 3), []float64{0.5, 0.25})
	require.NoError(t, err)
	lv, err := lc.View(1)
	require.NoError(t, err)

	mdata, m2data, ldata, lvdata := marshal(t, mc), marshal(t, m2), marshal(t, lc), marshal(t, lv)
	fs := []Info{describe(t, mdata), describe(t, m2data), describe(t, ldata), describe(t, lvdata)}

	f := fs[0]
	assert.Equal(t, mamba.CacheSnapshotFormat, f.Format)
	assert.Equal(t, "mamba", f.Kind)
	assert.Equal(t, []int{1}, f.EmptyViews)
	mv, err := mc.View(0)
	require.NoError(t, err)
	got := f.Views[0]
	assert.Equal(t, 2, got.BatchSize)
	assert.Equal(t, "float32", got.DType)
	assert.Equal(t, mv.ConvStates().Shape(), got.ConvStateShape)
	assert.Equal(t, []int{2, 4, 3}, got.ConvStateShape)
	assert.Equal(t, []int{2, 4, 3}, got.SSMStateShape)
	assert.Equal(t, mv.Positions(), got.Positions)
	assert.Nil(t, got.SeqlenOffset, "mamba has no seqlen offset")
	checkTable(t, f, mdata)

	f = fs[1]
	assert.Equal(t, mamba2.CacheSnapshotFormat, f.Format)
	assert.Equal(t, "mamba2", f.Kind)
	assert.Equal(t, []int{0}, f.EmptyViews)
	m2v, err := m2.View(1)
	require.NoError(t, err)
	got = f.Views[1]
	require.NotNil(t, got.LayerIndex)
	assert.Equal(t, 1, *got.LayerIndex)
	assert.Equal(t, "bfloat16", got.DType)
	assert.Equal(t, m2v.ConvStates().Shape(), got.ConvStateShape)
	assert.Equal(t, m2v.SSMStates().Shape(), got.SSMStateShape)
	assert.Equal(t, []int{2, 2, 4, 3}, got.SSMStateShape)
	assert.Equal(t, []int32{5, 5}, got.Positions)
	require.NotNil(t, got.SeqlenOffset)
	assert.Equal(t, 5, *got.SeqlenOffset)
	var m2m mamba2.Metadata
	require.NoError(t, json.Unmarshal(got.Metadata, &m2m))
	assert.Equal(t, m2meta.StateSize, m2m.StateSize)
	assert.Equal(t, m2meta.NGroups, m2m.NGroups)
	checkTable(t, f, m2data)

	f = fs[2]
	assert.Equal(t, lightning.CacheSnapshotFormat, f.Format)
	assert.Equal(t, "lightning", f.Kind)
	assert.Empty(t, f.EmptyViews)
	assert.Nil(t, f.Views[0].KeyValueShape, "layer 0's state was never written")
	assert.Equal(t, 2, f.Views[0].BatchSize, "the metadata gives the batch")
	assert.Equal(t, 2, f.Views[0].Heads)
	assert.Equal(t, []int{2, 2, 3, 3}, f.Views[1].KeyValueShape)
	assert.Equal(t, "float64", f.Views[1].DType)
	assert.Equal(t, []Tensor{{"views.1.key_value", "F64", []int{2, 2, 3, 3}, 2 * 2 * 3 * 3 * 8}}, f.Tensors)
	checkTable(t, f, ldata)

	f = fs[3]
	assert.Equal(t, lightning.ViewSnapshotFormat, f.Format)
	assert.Equal(t, "view", f.Object)
	require.NotNil(t, f.Views[0].LayerIndex)
	assert.Equal(t, 1, *f.Views[0].LayerIndex)
	assert.Equal(t, []int{2, 2, 3, 3}, f.Views[0].KeyValueShape)

	var out bytes.Buffer
	for _, f := range fs {
		require.NoError(t, f.WriteText(&out))
	}
	for _, want := range []string{"(mamba cache)", "conv state [2 4 3], ssm state [2 4 3]", "(mamba2 cache)", "seqlen offset 5",
		"view 0   layer 0: batch 2, 2 heads, float64, key_value not written yet", "key_value [2 2 3 3]", "(lightning view)"} {
		assert.Contains(t, out.String(), want)
	}
}

// The JSON field names are the ones kvmesh inspect --help documents.
func TestInfoJSONFieldNames(t *testing.T) {
	c, err := transformer.Init(transformerMeta(t, 1), tensor.Float32, nil)
	require.NoError(t, err)
	f := describe(t, marshal(t, c))
	f.File = "t.safetensors"
	b, err := json.Marshal(f)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	for _, k := range []string{"file", "format", "kind", "object", "num_views", "empty_views", "views", "tensors", "tensor_bytes", "file_bytes"} {
		assert.Contains(t, m, k)
	}
	assert.NotContains(t, m, "note", "a kvmesh snapshot has no note")
	view := m["views"].([]any)[0].(map[string]any)
	for _, k := range []string{"position", "empty", "layer_index", "dtype", "batch_size", "sequence_length", "kv_heads", "head_dim",
		"value_heads", "value_dim", "quantization", "index", "starts", "metadata"} {
		assert.Contains(t, view, k)
	}
	tensorEntry := m["tensors"].([]any)[0].(map[string]any)
	assert.Len(t, tensorEntry, 4)
	for _, k := range []string{"name", "dtype", "shape", "bytes"} {
		assert.Contains(t, tensorEntry, k)
	}
}

// A safetensors file that is not a kvmesh snapshot is listed, not decoded.
func TestDescribePlainSafetensors(t *testing.T) {
	for _, tc := range []struct {
		name string
		meta map[string]string
		head string
	}{
		{"no format", nil, `  no format: not a kvmesh snapshot`},
		{"pt", map[string]string{"format": "pt"}, `  format "pt": not a kvmesh snapshot`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tensor.Snapshot{Metadata: tc.meta, Tensors: map[string]tensor.Tensor{"w": ramp(2, 3)}, Int32s: map[string][]int32{"ids": {1, 2}}}
			data, err := s.MarshalBinary()
			require.NoError(t, err)
			f := describe(t, data)
			assert.Equal(t, "safetensors", f.Kind)
			assert.Equal(t, tc.meta["format"], f.Format)
			assert.Empty(t, f.Object)
			assert.Zero(t, f.NumViews)
			assert.Equal(t, []View{}, f.Views)
			assert.Equal(t, []int{}, f.EmptyViews)
			assert.Contains(t, f.Note, "not a kvmesh snapshot")
			assert.Equal(t, []Tensor{{"ids", "I32", []int{2}, 8}, {"w", "F32", []int{2, 3}, 24}}, f.Tensors)
			out := text(t, f)
			assert.Contains(t, out, "not a kvmesh snapshot")
			assert.Contains(t, out, tc.head)
			assert.Contains(t, out, "    w      F32    [2 3]  24\n")
		})
	}
}

// Data that is no safetensors file, names an unknown kvmesh format or does
// not decode as its kind gives an error wrapping the matching sentinel and
// the cause, with the message kvmesh inspect prints after the file name.
func TestDescribeErrors(t *testing.T) {
	mmeta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 3, ConvKernelSize: 3})
	require.NoError(t, err)
	mc, err := mamba.Init(mmeta, tensor.Float32)
	require.NoError(t, err)
	good := marshal(t, mc)
	edit := func(f func(s *tensor.Snapshot)) []byte {
		s, err := tensor.UnmarshalSnapshot(good)
		require.NoError(t, err)
		f(&s)
		data, err := s.MarshalBinary()
		require.NoError(t, err)
		return data
	}
	flipped := bytes.Clone(good)
	flipped[8] ^= 0xff // the header's opening brace
	for _, tc := range []struct {
		name     string
		data     []byte
		sentinel error
		cause    error
		want     string
	}{
		{"empty", nil, ErrNotSafetensors, tensor.ErrSnapshot, "not a valid safetensors snapshot: tensor: bad snapshot: 0 bytes"},
		{"truncated", good[:len(good)-5], ErrNotSafetensors, tensor.ErrSnapshot, "not a valid safetensors snapshot: tensor: bad snapshot"},
		{"flipped header byte", flipped, ErrNotSafetensors, tensor.ErrSnapshot, "not a valid safetensors snapshot: tensor: bad snapshot"},
		{"short", good[:4], ErrNotSafetensors, tensor.ErrSnapshot,
			"not a valid safetensors snapshot: tensor: bad snapshot: 4 bytes, shorter than the 8-byte header length"},
		{"unknown format", edit(func(s *tensor.Snapshot) { s.Metadata["format"] = "kvmesh.nope.Cache/v1" }), ErrUnknownFormat, nil,
			`unknown snapshot format "kvmesh.nope.Cache/v1" (known: kvmesh.lightning.Cache/v1, kvmesh.lightning.View/v1, kvmesh.mamba.Cache/v1`},
		{"view count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "3" }), ErrInvalid, mamba.ErrSnapshot,
			"invalid kvmesh.mamba.Cache/v1 snapshot: mamba: bad snapshot"},
		{"wrong shape", edit(func(s *tensor.Snapshot) { s.Tensors["views.0.ssm_states"] = ramp(2, 4, 2) }), ErrInvalid, mamba.ErrSnapshot,
			"invalid kvmesh.mamba.Cache/v1 snapshot: mamba: bad snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Describe(tc.data)
			require.Error(t, err)
			assert.Equal(t, Info{}, f)
			assert.ErrorIs(t, err, tc.sentinel)
			if tc.cause != nil {
				assert.ErrorIs(t, err, tc.cause)
			}
			for _, other := range []error{ErrNotSafetensors, ErrUnknownFormat, ErrInvalid} {
				if other != tc.sentinel {
					assert.NotErrorIs(t, err, other)
				}
			}
			assert.True(t, len(err.Error()) >= len(tc.want) && err.Error()[:len(tc.want)] == tc.want, "error %q does not begin with %q", err, tc.want)
		})
	}
}

// Formats lists the view and cache formats of every kind, sorted; each one
// is a format Describe decodes.
func TestFormats(t *testing.T) {
	want := []string{lightning.CacheSnapshotFormat, lightning.ViewSnapshotFormat, mamba.CacheSnapshotFormat, mamba.ViewSnapshotFormat,
		mamba2.CacheSnapshotFormat, mamba2.ViewSnapshotFormat, paged.CacheSnapshotFormat, paged.ViewSnapshotFormat,
		transformer.CacheSnapshotFormat, transformer.ViewSnapshotFormat}
	assert.Equal(t, want, Formats())
	got := Formats()
	got[0] = "changed"
	assert.Equal(t, want, Formats(), "Formats returns a new slice")
}

// Names compare with their runs of digits as numbers.
func TestNaturalCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // the sign
	}{
		{"views.2.key", "views.10.key", -1},
		{"views.10.key", "views.2.key", 1},
		{"views.2.key", "views.2.key", 0},
		{"views.2.key", "views.2.value", -1},
		{"views.02.key", "views.2.key", 0},
		{"views.9", "views.10", -1},
		{"a", "ab", -1},
		{"", "a", -1},
		{"layers.1.key_pages", "layers.1.key_scales", -1},
		{"ids", "w", -1},
	} {
		got := naturalCompare(tc.a, tc.b)
		assert.Equal(t, tc.want, max(-1, min(1, got)), "naturalCompare(%q, %q) = %d", tc.a, tc.b, got)
	}
}
