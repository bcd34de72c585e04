package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/engine"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// writeTemp writes data to a new file name in a test directory.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, data, 0o644))
	return path
}

// inspectJSON runs kvmesh inspect --json on files and decodes its lines.
func inspectJSON(t *testing.T, files ...string) []fileInfo {
	t.Helper()
	code, out, errOut := runCLI(append([]string{"inspect", "--json"}, files...)...)
	require.Equal(t, 0, code, errOut)
	var infos []fileInfo
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var f fileInfo
		require.NoError(t, json.Unmarshal(sc.Bytes(), &f), "each line is one JSON object")
		infos = append(infos, f)
	}
	require.Len(t, infos, len(files), "one object per file")
	return infos
}

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

// tensorsByName indexes a file's tensor table.
func tensorsByName(f fileInfo) map[string]tensorInfo {
	m := map[string]tensorInfo{}
	for _, t := range f.Tensors {
		m[t.Name] = t
	}
	return m
}

// checkTable checks the tensor table's total and that it lists exactly the
// entries of data, with their dtypes, shapes and sizes.
func checkTable(t *testing.T, f fileInfo, data []byte) {
	t.Helper()
	s, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	assert.Len(t, f.Tensors, len(s.Tensors)+len(s.Int32s))
	var total int64
	byName := tensorsByName(f)
	for name, x := range s.Tensors {
		assert.Equal(t, tensorInfo{name, x.DType().SafetensorsName(), x.Shape(), int64(x.NumBytes())}, byName[name])
		total += int64(x.NumBytes())
	}
	for name, a := range s.Int32s {
		assert.Equal(t, tensorInfo{name, "I32", []int{len(a)}, int64(4 * len(a))}, byName[name])
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
// written three tokens past different starts; stored plain and int8.
func TestInspectTransformerCache(t *testing.T) {
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
			data, err := c.MarshalBinary()
			require.NoError(t, err)
			path := writeTemp(t, "t.safetensors", data)

			f := inspectJSON(t, path)[0]
			assert.Equal(t, path, f.File)
			assert.Equal(t, transformer.CacheSnapshotFormat, f.Format)
			assert.Equal(t, "transformer", f.Kind)
			assert.Equal(t, "cache", f.Object)
			assert.Equal(t, 3, f.NumViews)
			assert.Equal(t, []int{1}, f.EmptyViews)
			require.Len(t, f.Views, 3)
			assert.Equal(t, viewInfo{Position: 1, Empty: true}, f.Views[1])
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
				assert.Equal(t, tensorInfo{"views.0.key", "F32", []int{2, 8, 2, 4}, 2 * 8 * 2 * 4 * 4}, key)
				assert.NotContains(t, byName, "views.0.key_scales")
			case tensor.Int8:
				assert.Equal(t, tensorInfo{"views.0.key", "I8", []int{2, 8, 2, 4}, 2 * 8 * 2 * 4}, key)
				assert.Equal(t, tensorInfo{"views.0.key_scales", "F32", []int{2, 8, 2, 1}, 2 * 8 * 2 * 4}, byName["views.0.key_scales"])
			case tensor.NF4:
				assert.Equal(t, tensorInfo{"views.0.key", "U8", []int{2, 8, 2, 2}, 2 * 8 * 2 * 2}, key)
				assert.Equal(t, tensorInfo{"views.0.key_scales", "BF16", []int{2, 8, 2, 2}, 2 * 8 * 2 * 2 * 2}, byName["views.0.key_scales"])
			}
			assert.NotContains(t, byName, "views.1.key", "an empty view stores no tensors")
			checkTable(t, f, data)

			code, out, errOut := runCLI("inspect", path)
			require.Equal(t, 0, code, errOut)
			for _, want := range []string{path, "format   kvmesh.transformer.Cache/v1 (transformer cache)", "views    3, 1 empty: 1",
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
func TestInspectPaged(t *testing.T) {
	meta := paged.Metadata{BatchSize: 3, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.9}
	for _, st := range []paged.Storage{{DType: tensor.Float32}, {DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4}} {
		t.Run(quantName(st.Quantization), func(t *testing.T) {
			c, err := paged.InitStorage(meta, st)
			require.NoError(t, err)
			c, err = c.WithView(1, paged.View{})
			require.NoError(t, err)
			data, err := c.MarshalBinary()
			require.NoError(t, err)
			v0, err := c.View(0)
			require.NoError(t, err)
			vdata, err := v0.MarshalBinary()
			require.NoError(t, err)
			cpath, vpath := writeTemp(t, "c.safetensors", data), writeTemp(t, "v.safetensors", vdata)

			fs := inspectJSON(t, cpath, vpath)
			f, fv := fs[0], fs[1]
			assert.Equal(t, paged.CacheSnapshotFormat, f.Format)
			assert.Equal(t, "paged", f.Kind)
			assert.Equal(t, "cache", f.Object)
			assert.Equal(t, 2, f.NumViews)
			assert.Equal(t, []int{1}, f.EmptyViews)
			assert.Equal(t, paged.ViewSnapshotFormat, fv.Format)
			assert.Equal(t, "view", fv.Object)
			assert.Equal(t, 1, fv.NumViews)
			assert.Empty(t, fv.EmptyViews)
			for _, got := range []viewInfo{f.Views[0], fv.Views[0]} {
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
			assert.Equal(t, viewInfo{Position: 1, Empty: true}, f.Views[1])
			byName := tensorsByName(f)
			if st.Quantization == tensor.NF4 {
				assert.Equal(t, 4, f.Views[0].BlockSize)
				assert.Equal(t, tensorInfo{"layers.0.key_pages", "U8", []int{2, 9, 4, 4}, 2 * 9 * 4 * 4}, byName["layers.0.key_pages"])
				assert.Equal(t, tensorInfo{"layers.0.key_scales", "F32", []int{2, 9, 4, 2}, 2 * 9 * 4 * 2 * 4}, byName["layers.0.key_scales"])
			} else {
				assert.Equal(t, tensorInfo{"layers.0.key_pages", "F32", []int{2, 9, 4, 8}, 2 * 9 * 4 * 8 * 4}, byName["layers.0.key_pages"])
			}
			assert.Len(t, f.Tensors, len(fv.Tensors), "the absent layer stores nothing")
			checkTable(t, f, data)
			checkTable(t, fv, vdata)

			code, out, errOut := runCLI("inspect", cpath)
			require.Equal(t, 0, code, errOut)
			assert.Contains(t, out, "view 0   layer 0: 9 pages of 4 tokens (page 0 the dummy), 2 kv heads, head dim 8")
			assert.Contains(t, out, "batch 3, 4 pages per sequence (16 tokens)")
			assert.Contains(t, out, "view 1   empty")
		})
	}
}

// Mamba and Mamba2 caches with an empty view and written states; a
// lightning cache with one written and one unwritten state, and views.
func TestInspectRecurrent(t *testing.T) {
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

	marshal := func(m interface{ MarshalBinary() ([]byte, error) }) []byte {
		data, err := m.MarshalBinary()
		require.NoError(t, err)
		return data
	}
	mdata, m2data, ldata, lvdata := marshal(mc), marshal(m2), marshal(lc), marshal(lv)
	paths := []string{writeTemp(t, "m.safetensors", mdata), writeTemp(t, "m2.safetensors", m2data),
		writeTemp(t, "l.safetensors", ldata), writeTemp(t, "lv.safetensors", lvdata)}
	fs := inspectJSON(t, paths...)

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
	assert.Equal(t, []tensorInfo{{"views.1.key_value", "F64", []int{2, 2, 3, 3}, 2 * 2 * 3 * 3 * 8}}, f.Tensors)
	checkTable(t, f, ldata)

	f = fs[3]
	assert.Equal(t, lightning.ViewSnapshotFormat, f.Format)
	assert.Equal(t, "view", f.Object)
	require.NotNil(t, f.Views[0].LayerIndex)
	assert.Equal(t, 1, *f.Views[0].LayerIndex)
	assert.Equal(t, []int{2, 2, 3, 3}, f.Views[0].KeyValueShape)

	code, out, errOut := runCLI(append([]string{"inspect"}, paths...)...)
	require.Equal(t, 0, code, errOut)
	for _, want := range []string{"(mamba cache)", "conv state [2 4 3], ssm state [2 4 3]", "(mamba2 cache)", "seqlen offset 5",
		"view 0   layer 0: batch 2, 2 heads, float64, key_value not written yet", "key_value [2 2 3 3]", "(lightning view)"} {
		assert.Contains(t, out, want)
	}
}

// The --json field names are the documented ones.
func TestInspectJSONFieldNames(t *testing.T) {
	c, err := transformer.Init(transformerMeta(t, 1), tensor.Float32, nil)
	require.NoError(t, err)
	data, err := c.MarshalBinary()
	require.NoError(t, err)
	code, out, errOut := runCLI("inspect", "--json", writeTemp(t, "t.safetensors", data))
	require.Equal(t, 0, code, errOut)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &m))
	for _, k := range []string{"file", "format", "kind", "object", "num_views", "empty_views", "views", "tensors", "tensor_bytes", "file_bytes"} {
		assert.Contains(t, m, k)
	}
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
func TestInspectPlainSafetensors(t *testing.T) {
	for _, meta := range []map[string]string{nil, {"format": "pt"}} {
		s := tensor.Snapshot{Metadata: meta, Tensors: map[string]tensor.Tensor{"w": ramp(2, 3)}, Int32s: map[string][]int32{"ids": {1, 2}}}
		data, err := s.MarshalBinary()
		require.NoError(t, err)
		path := writeTemp(t, "plain.safetensors", data)
		f := inspectJSON(t, path)[0]
		assert.Equal(t, "safetensors", f.Kind)
		assert.Equal(t, meta["format"], f.Format)
		assert.Empty(t, f.Object)
		assert.Zero(t, f.NumViews)
		assert.Contains(t, f.Note, "not a kvmesh snapshot")
		assert.Equal(t, []tensorInfo{{"ids", "I32", []int{2}, 8}, {"w", "F32", []int{2, 3}, 24}}, f.Tensors)
		code, out, _ := runCLI("inspect", path)
		assert.Equal(t, 0, code)
		assert.Contains(t, out, "not a kvmesh snapshot")
		assert.Contains(t, out, "    w      F32    [2 3]  24\n")
	}
}

// Unreadable and invalid files exit 2 with a message naming the file; the
// other files are still inspected.
func TestInspectBadFiles(t *testing.T) {
	mmeta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 3, ConvKernelSize: 3})
	require.NoError(t, err)
	mc, err := mamba.Init(mmeta, tensor.Float32)
	require.NoError(t, err)
	good, err := mc.MarshalBinary()
	require.NoError(t, err)
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
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte // nil: the file does not exist
		want string
	}{
		{"missing", nil, "cannot read: no such file or directory"},
		{"truncated", good[:len(good)-5], "not a valid safetensors snapshot"},
		{"flipped header byte", flipped, "not a valid safetensors snapshot"},
		{"short", good[:4], "not a valid safetensors snapshot: tensor: bad snapshot: 4 bytes, shorter than the 8-byte header length"},
		{"unknown format", edit(func(s *tensor.Snapshot) { s.Metadata["format"] = "kvmesh.nope.Cache/v1" }),
			`unknown snapshot format "kvmesh.nope.Cache/v1" (known: kvmesh.lightning.Cache/v1`},
		{"view count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "3" }), "invalid kvmesh.mamba.Cache/v1 snapshot"},
		{"wrong shape", edit(func(s *tensor.Snapshot) { s.Tensors["views.0.ssm_states"] = ramp(2, 4, 2) }),
			"invalid kvmesh.mamba.Cache/v1 snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".safetensors")
			if tc.data != nil {
				require.NoError(t, os.WriteFile(path, tc.data, 0o644))
			}
			code, out, errOut := runCLI("inspect", path)
			assert.Equal(t, 2, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, path+": "+tc.want)

			code, out, errOut = runCLI("inspect", "--json", path)
			assert.Equal(t, 2, code)
			var fe fileError
			require.NoError(t, json.Unmarshal([]byte(out), &fe))
			assert.Equal(t, path, fe.File)
			assert.Contains(t, fe.Error, tc.want)
			assert.Contains(t, errOut, path)
		})
	}

	// A good file among bad ones is still reported, and each bad one named.
	goodPath := writeTemp(t, "good.safetensors", good)
	missing := filepath.Join(dir, "nope.safetensors")
	code, out, errOut := runCLI("inspect", missing, goodPath, filepath.Join(dir, "truncated.safetensors"))
	assert.Equal(t, 2, code)
	assert.Contains(t, out, goodPath)
	assert.Contains(t, out, "(mamba cache)")
	assert.Contains(t, errOut, missing+": cannot read")
	assert.Contains(t, errOut, "truncated.safetensors: not a valid safetensors snapshot")

	code, _, _ = runCLI("inspect")
	assert.Equal(t, 2, code, "no file is a usage error")
}

// kvmesh run --snapshot writes the final version of every cache; inspect
// reads the files, which decode to the caches an engine run of the same
// config ends with; a second run refuses to overwrite them.
func TestRunSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "snaps")
	code, out, errOut := runCLI(runArgs("--snapshot", dir, "--json", "--parity=false")...)
	require.Equal(t, 0, code, errOut)
	var rep runOutput
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	ids := []string{"kv", "mamba2", "lightning"}
	var paths []string
	for _, id := range ids {
		paths = append(paths, filepath.Join(dir, id+".safetensors"))
	}
	assert.Equal(t, paths, rep.Snapshots)

	fs := inspectJSON(t, paths...)
	assert.Equal(t, paged.CacheSnapshotFormat, fs[0].Format)
	assert.Equal(t, mamba2.CacheSnapshotFormat, fs[1].Format)
	assert.Equal(t, lightning.CacheSnapshotFormat, fs[2].Format)
	for _, f := range fs {
		assert.Equal(t, "cache", f.Object)
		assert.Empty(t, f.EmptyViews)
	}

	// The same config through the engine, which is deterministic: its final
	// versions are what the files hold.
	code, cfgJSON, errOut := runCLI(runArgs("--print-config")...)
	require.Equal(t, 0, code, errOut)
	cfg := engine.DefaultConfig()
	require.NoError(t, json.Unmarshal([]byte(cfgJSON), &cfg))
	final := map[string]actors.Version{}
	cfg.Snapshot = func(id string, v actors.Version) error { final[id] = v; return nil }
	_, err := engine.Run(t.Context(), cfg)
	require.NoError(t, err)
	require.Len(t, final, 3)

	read := func(i int) []byte {
		data, err := os.ReadFile(paths[i])
		require.NoError(t, err)
		return data
	}
	kv, err := paged.UnmarshalCache(read(0))
	require.NoError(t, err)
	require.Equal(t, len(final["kv"].Views), kv.Len())
	for l, view := range final["kv"].Views {
		want := view.(paged.View)
		got, err := kv.View(l)
		require.NoError(t, err)
		assert.Equal(t, want.Metadata(), got.Metadata())
		assert.Equal(t, want.Metadata().NumPagesPerLayer, fs[0].Views[l].Pages)
		assert.True(t, bytes.Equal(want.KeyPages().Bytes(), got.KeyPages().Bytes()), "kv layer %d: key pages differ", l)
		assert.True(t, bytes.Equal(want.ValuePages().Bytes(), got.ValuePages().Bytes()), "kv layer %d: value pages differ", l)
	}
	m2, err := mamba2.UnmarshalCache(read(1))
	require.NoError(t, err)
	for l, view := range final["mamba2"].Views {
		want := view.(mamba2.View)
		got, err := m2.View(l)
		require.NoError(t, err)
		assert.Equal(t, want.Metadata(), got.Metadata())
		assert.Equal(t, want.SeqlenOffset(), *fs[1].Views[l].SeqlenOffset)
		assert.True(t, bytes.Equal(want.SSMStates().Bytes(), got.SSMStates().Bytes()), "mamba2 layer %d: SSM states differ", l)
	}
	lt, err := lightning.UnmarshalCache(read(2))
	require.NoError(t, err)
	for l, view := range final["lightning"].Views {
		want := view.(lightning.View)
		got, err := lt.View(l)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(want.KeyValue().Bytes(), got.KeyValue().Bytes()), "lightning layer %d: key_value differs", l)
	}

	// A second run into the same directory refuses before it starts.
	before := read(0)
	code, out, errOut = runCLI(runArgs("--snapshot", dir)...)
	assert.Equal(t, 2, code)
	assert.Empty(t, out)
	assert.Contains(t, errOut, paths[0]+" exists")
	assert.True(t, bytes.Equal(before, read(0)), "the existing snapshot is untouched")

	// A directory that cannot be created is bad input too.
	code, _, errOut = runCLI(runArgs("--snapshot", filepath.Join(paths[0], "sub"))...)
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "--snapshot "+filepath.Join(paths[0], "sub"))
}

// The text report names the snapshot files.
func TestRunSnapshotText(t *testing.T) {
	dir := t.TempDir()
	code, out, errOut := runCLI(runArgs("--snapshot", dir, "--parity=false", "--layers", "attention,lightning")...)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "  snapshots     "+filepath.Join(dir, "kv.safetensors")+", "+filepath.Join(dir, "lightning.safetensors"))
	_, err := os.Stat(filepath.Join(dir, "mamba2.safetensors"))
	assert.True(t, os.IsNotExist(err), "a model without mamba2 layers has no mamba2 cache")
}
