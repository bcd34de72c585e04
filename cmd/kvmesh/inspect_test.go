package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
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
	"github.com/kvmesh/kvmesh/layers/snapshot"
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
func inspectJSON(t *testing.T, files ...string) []snapshot.Info {
	t.Helper()
	code, out, errOut := runCLI(append([]string{"inspect", "--json"}, files...)...)
	require.Equal(t, 0, code, errOut)
	var infos []snapshot.Info
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var f snapshot.Info
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

// An end-to-end run over files of every sort: --json prints one line per
// file, in argument order, which is snapshot.Describe's Info of the file
// with File the path as given; the text form is each Info's WriteText, a
// blank line between files. A plain safetensors file is no error.
func TestInspectEndToEnd(t *testing.T) {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 12,
		NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(4)})
	require.NoError(t, err)
	tc, err := transformer.InitStorage(meta, transformer.Storage{DType: tensor.Float32, Quantization: tensor.Int8}, []int32{0, 2})
	require.NoError(t, err)
	tc, err = tc.WithView(1, transformer.View{})
	require.NoError(t, err)
	pc, err := paged.Init(paged.Metadata{BatchSize: 3, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.9}, tensor.Float32)
	require.NoError(t, err)
	pv, err := pc.View(1)
	require.NoError(t, err)
	mmeta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 3, ConvKernelSize: 3})
	require.NoError(t, err)
	mc, err := mamba.Init(mmeta, tensor.Float32)
	require.NoError(t, err)
	b, h, d := 2, 2, 3
	lmeta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &b, NumHeads: &h, HeadDim: &d})
	require.NoError(t, err)
	lc, err := lightning.Init(2, lmeta, tensor.Float64)
	require.NoError(t, err)
	plain := tensor.Snapshot{Metadata: map[string]string{"format": "pt"}, Tensors: map[string]tensor.Tensor{"w": ramp(2, 3)}}

	var paths []string
	var want []snapshot.Info
	for i, m := range []interface{ MarshalBinary() ([]byte, error) }{tc, pv, mc, lc, plain} {
		data, err := m.MarshalBinary()
		require.NoError(t, err)
		path := writeTemp(t, fmt.Sprintf("f%d.safetensors", i), data)
		info, err := snapshot.Describe(data)
		require.NoError(t, err)
		info.File = path
		paths, want = append(paths, path), append(want, info)
	}

	code, out, errOut := runCLI(append([]string{"inspect", "--json"}, paths...)...)
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, len(paths), "one line per file")
	for i, line := range lines {
		wantJSON, err := json.Marshal(want[i])
		require.NoError(t, err)
		assert.True(t, bytes.Equal(wantJSON, []byte(line)), "file %d: --json line differs from snapshot.Describe's Info", i)
		var f snapshot.Info
		require.NoError(t, json.Unmarshal([]byte(line), &f))
		assert.Equal(t, paths[i], f.File, "the file is the path as given")
	}
	infos := inspectJSON(t, paths...)
	assert.Equal(t, "transformer", infos[0].Kind)
	assert.Equal(t, []int{1}, infos[0].EmptyViews)
	assert.Equal(t, "paged", infos[1].Kind)
	assert.Equal(t, "view", infos[1].Object)
	assert.Equal(t, "mamba", infos[2].Kind)
	assert.Equal(t, "lightning", infos[3].Kind)
	assert.Equal(t, "safetensors", infos[4].Kind)
	assert.Contains(t, infos[4].Note, "not a kvmesh snapshot")

	code, out, errOut = runCLI(append([]string{"inspect"}, paths...)...)
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, errOut)
	var wantText bytes.Buffer
	for i, info := range want {
		if i > 0 {
			wantText.WriteString("\n")
		}
		require.NoError(t, info.WriteText(&wantText))
	}
	assert.Equal(t, wantText.String(), out)
	assert.True(t, strings.HasPrefix(out, paths[0]+"\n"), "the first summary starts with its file")
	for _, path := range paths[1:] {
		assert.Contains(t, out, "\n\n"+path+"\n", "each further summary starts with its file after a blank line")
	}
	assert.Contains(t, out, "  view 9   layer 9: batch 2")
	assert.Contains(t, out, "  view 10  layer 10: batch 2", "views past 9 line up with the others")
	assert.Contains(t, out, "not a kvmesh snapshot")
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
