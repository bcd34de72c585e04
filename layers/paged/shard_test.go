package paged

import (
	"fmt"
	mrand "math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// shardMesh returns a mesh of dp×tp devices (dp major), without fsdp.
func shardMesh(t testing.TB, dp, tp int) sharding.Mesh { return testkit.ShardMesh(t, dp, tp, false) }

// shardRandKV returns a float32 (rows, h, d) tensor of seeded random values.
func shardRandKV(r *mrand.Rand, rows, h, d int) tensor.Tensor {
	data := make([]float64, rows*h*d)
	for i := range data {
		data[i] = r.NormFloat64()
	}
	return tensor.Must(tensor.FromFloat64s(tensor.Float32, data, rows, h, d))
}

// shardMeta returns metadata for layer 1 of 2 with h kv heads, 16 pages of
// 4 positions, head dim 8 and 4 pages per sequence.
func shardTestMeta(h int) Metadata {
	return Metadata{
		BatchSize: 4, NumHiddenLayers: 2, NumPagesPerLayer: 16, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: h, KVHeadDimSize: 8, HBMUtilization: 0.5,
	}
}

// The page tables of the test sequences.
var (
	shardTableA = []int32{3, 7, 0, 0}
	shardTableB = []int32{5, 9, 11, 0}
	shardTableC = []int32{2, 12, 0, 0}
	shardTableD = []int32{13, 14, 0, 0}
	shardUnused = []int32{0, 0, 0, 0}
)

// shardPrior returns a view with prior writes: sequence A prefilled with 6
// tokens, B with 9 in two chunks, C with 3, then one decode step for A, B
// and C beside an inactive slot. A holds 7 tokens, B 10 and C 4.
func shardPrior(t testing.TB, r *mrand.Rand, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	return shardPriorStorage(t, r, meta, Storage{DType: dtype})
}

// shardPriorStorage is shardPrior for a view stored as st.
func shardPriorStorage(t testing.TB, r *mrand.Rand, meta Metadata, st Storage) View {
	t.Helper()
	h, d := meta.NumKVHeads, meta.KVHeadDimSize
	v, err := NewViewStorage(meta, st, 1)
	require.NoError(t, err)
	prefill := func(table []int32, start, n, pad int) {
		t.Helper()
		pos := make([]int32, n+pad)
		for i := range pos {
			pos[i] = int32(start + i)
		}
		v, err = v.WritePrefill(shardRandKV(r, n+pad, h, d), shardRandKV(r, n+pad, h, d),
			StepMetadata{PrefillLength: int32(start + n), PrefillPosition: pos, PrefillPageTable: table})
		require.NoError(t, err)
	}
	prefill(shardTableA, 0, 6, 2)
	prefill(shardTableB, 0, 4, 0)
	prefill(shardTableB, 4, 5, 3)
	prefill(shardTableC, 0, 3, 1)
	v, err = v.WriteDecodes(shardRandKV(r, 4, h, d), shardRandKV(r, 4, h, d), StepMetadata{
		DecodesPosition:  []int32{6, 9, 3, -1},
		DecodesPageTable: [][]int32{shardTableA, shardTableB, shardTableC, shardUnused},
	})
	require.NoError(t, err)
	return v
}

// shardStep is one write: new tokens and the step metadata.
// requireShardedSteps checks that parts (v split by specs) join back to v,
// and that applying steps to v and, cut by specs, to every part gives
// views whose join equals the unsharded result byte for byte. It returns
// that result and the parts after the steps.
func requireShardedSteps(t *testing.T, v View, parts []View, steps []shardStep, meta Metadata, specs Specs, mesh sharding.Mesh) (View, []View) {
	t.Helper()
	back, err := JoinViews(parts, meta, specs, mesh)
	require.NoError(t, err)
	requireSameShardView(t, v, back)
	want := v
	for _, s := range steps {
		want, err = s.apply(want, s.key, s.value)
		require.NoError(t, err)
		keys, values, err := specs.SplitTokens(s.key, s.value, mesh)
		require.NoError(t, err)
		for i := range parts {
			parts[i], err = s.apply(parts[i], keys[i], values[i])
			require.NoError(t, err)
		}
	}
	got, err := JoinViews(parts, meta, specs, mesh)
	require.NoError(t, err)
	requireSameShardView(t, want, got)
	return want, parts
}

type shardStep struct {
	decode     bool
	key, value tensor.Tensor
	meta       StepMetadata
}

// apply applies the step to v.
func (s shardStep) apply(v View, key, value tensor.Tensor) (View, error) {
	if s.decode {
		return v.WriteDecodes(key, value, s.meta)
	}
	return v.WritePrefill(key, value, s.meta)
}

// shardSteps returns the writes of one test case, drawn from r.
func shardSteps(r *mrand.Rand, meta Metadata, name string) []shardStep {
	h, d := meta.NumKVHeads, meta.KVHeadDimSize
	decode := shardStep{decode: true, key: shardRandKV(r, 4, h, d), value: shardRandKV(r, 4, h, d), meta: StepMetadata{
		DecodesPosition:  []int32{7, 10, -1, 4},
		DecodesPageTable: [][]int32{shardTableA, shardTableB, shardUnused, shardTableC},
	}}
	pos := []int32{0, 1, 2, 3, 4, 5, 6, 7}
	prefillNew := shardStep{key: shardRandKV(r, 8, h, d), value: shardRandKV(r, 8, h, d),
		meta: StepMetadata{PrefillLength: 6, PrefillPosition: pos, PrefillPageTable: shardTableD}}
	// B holds positions 0..9; rewriting 8..10 lands behind the tip of its
	// third page (11), which copies that page of each head.
	prefillMore := shardStep{key: shardRandKV(r, 3, h, d), value: shardRandKV(r, 3, h, d),
		meta: StepMetadata{PrefillLength: 11, PrefillPosition: []int32{8, 9, 10}, PrefillPageTable: shardTableB}}
	switch name {
	case "decodes":
		return []shardStep{decode}
	case "prefill new sequence":
		return []shardStep{prefillNew}
	case "prefill chunk behind a page's tip":
		return []shardStep{prefillMore}
	default: // "decodes then prefill"
		return []shardStep{decode, prefillNew}
	}
}

// requireSameShardView requires got and want to hold the same pages (the
// same codes and scales, byte for byte, when quantized), metadata,
// storage and layer index.
func requireSameShardView(t testing.TB, want, got View) {
	t.Helper()
	require.Equal(t, want.Storage(), got.Storage())
	require.True(t, want.KeyPages().Equal(got.KeyPages()), "key pages differ")
	require.True(t, want.ValuePages().Equal(got.ValuePages()), "value pages differ")
	if want.IsQuantized() {
		require.True(t, want.KeyCodes().Equal(got.KeyCodes()), "key codes differ")
		require.True(t, want.KeyScales().Equal(got.KeyScales()), "key scales differ")
		require.True(t, want.ValueCodes().Equal(got.ValueCodes()), "value codes differ")
		require.True(t, want.ValueScales().Equal(got.ValueScales()), "value scales differ")
	}
	require.Equal(t, want.Metadata(), got.Metadata())
	require.Equal(t, want.DType(), got.DType())
	require.Equal(t, want.LayerIndex(), got.LayerIndex())
}

// TestShardedWriteEqualsUnsharded splits a view with prior writes and a
// step's tokens by the view's specs, applies each shard's writes to its
// shard view with the same step metadata, joins, and requires the
// unsharded writes' view byte for byte, for tp in {1, 2, 4} and dp in
// {1, 2}. With 2 kv heads, tp 4 replicates the pages (EasyDeL replicates
// KV when kv_heads < tp).
func TestShardedWriteEqualsUnsharded(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	seed := int64(0)
	for _, h := range []int{8, 4, 2} {
		for _, dp := range []int{1, 2} {
			for _, tp := range []int{1, 2, 4} {
				for _, step := range []string{"decodes", "prefill new sequence", "prefill chunk behind a page's tip", "decodes then prefill"} {
					seed++
					t.Run(fmt.Sprintf("kv_heads=%d/dp=%d/tp=%d/%s", h, dp, tp, step), func(t *testing.T) {
						r := mrand.New(mrand.NewSource(seed))
						meta := shardTestMeta(h)
						mesh := shardMesh(t, dp, tp)
						v := shardPrior(t, r, meta, tensor.BFloat16)
						steps := shardSteps(r, meta, step)
						mode := sharding.ModePrefill
						if steps[0].decode {
							mode = sharding.ModeDecode
						}
						specs, err := v.Specs(pa, mode, mesh)
						require.NoError(t, err)

						// The pages are cut over tp exactly when the budget formula
						// shards the heads.
						shards, err := sharding.HeadShards(h, pa, mesh)
						require.NoError(t, err)
						require.Equal(t, shards, specs.KeyPages[0].Blocks(mesh))
						if h%tp == 0 {
							require.Equal(t, "PartitionSpec('tp', None, None, None)", specs.KeyPages.String())
						} else {
							require.True(t, specs.KeyPages.IsReplicated(), "kv_heads %d < tp %d: replicated", h, tp)
						}

						parts, err := v.Split(specs, mesh)
						require.NoError(t, err)
						require.Len(t, parts, dp*tp)
						for _, p := range parts {
							require.Equal(t, h/shards, p.Metadata().NumKVHeads)
						}
						requireShardedSteps(t, v, parts, steps, meta, specs, mesh)
					})
				}
			}
		}
	}
}

func TestViewSpecs(t *testing.T) {
	v := shardPrior(t, mrand.New(mrand.NewSource(1)), shardTestMeta(4), tensor.Float32)
	mesh := func(sizes map[string]int) sharding.Mesh {
		n := 1
		for _, s := range sizes {
			n *= s
		}
		m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Devices: sharding.UniformDevices(n, 1)})
		require.NoError(t, err)
		return m
	}
	headOverDPTP := sharding.DefaultPartitionAxis()
	headOverDPTP.HeadAxis = sharding.MeshAxes{sharding.DP, sharding.TP}
	headOverDPTP.DecodeHeadAxis = nil
	tests := []struct {
		name string
		pa   sharding.PartitionAxis
		mode sharding.Mode
		mesh sharding.Mesh
		want string
	}{
		{"dp=2 tp=4", sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh(map[string]int{"dp": 2, "tp": 4}), "PartitionSpec('tp', None, None, None)"},
		{"dp=2 tp=2 decode", sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh(map[string]int{"dp": 2, "tp": 2}), "PartitionSpec('tp', None, None, None)"},
		// tp 8 does not divide 4 kv heads: replicated.
		{"tp=8", sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh(map[string]int{"tp": 8}), "PartitionSpec(None, None, None, None)"},
		// No tp axis: replicated.
		{"dp=2", sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh(map[string]int{"dp": 2}), "PartitionSpec(None, None, None, None)"},
		{"heads over dp and tp", headOverDPTP, sharding.ModePrefill, mesh(map[string]int{"dp": 2, "tp": 2}), "PartitionSpec(('dp', 'tp'), None, None, None)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Specs(tc.pa, tc.mode, tc.mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.want, s.KeyPages.String())
			assert.Equal(t, tc.want, s.ValuePages.String())
		})
	}
	s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh(map[string]int{"tp": 2}))
	require.NoError(t, err)
	k, val := s.TokenSpecs()
	assert.Equal(t, "PartitionSpec(None, 'tp', None)", k.String())
	assert.Equal(t, "PartitionSpec(None, 'tp', None)", val.String())

	_, err = View{}.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh(map[string]int{"tp": 2}))
	assert.ErrorIs(t, err, ErrAbsentView)
	_, err = v.Specs(sharding.DefaultPartitionAxis(), sharding.Mode("x"), mesh(map[string]int{"tp": 2}))
	assert.ErrorIs(t, err, ErrSharding)
	assert.ErrorIs(t, err, sharding.ErrMode)
}

func TestSplitHeadsOverDPAndTP(t *testing.T) {
	// Heads cut over ('dp', 'tp'): 8 heads, one per device of a 2×4 mesh.
	pa := sharding.DefaultPartitionAxis()
	pa.HeadAxis = sharding.MeshAxes{sharding.DP, sharding.TP}
	pa.DecodeHeadAxis = nil
	r := mrand.New(mrand.NewSource(7))
	meta := shardTestMeta(8)
	v := shardPrior(t, r, meta, tensor.Float32)
	mesh := shardMesh(t, 2, 4)
	s, err := v.Specs(pa, sharding.ModeDecode, mesh)
	require.NoError(t, err)
	parts, err := v.Split(s, mesh)
	require.NoError(t, err)
	for i, p := range parts {
		require.Equal(t, 1, p.Metadata().NumKVHeads)
		// Device i holds head i.
		k, _, err := p.Gather(shardTableB, 10)
		require.NoError(t, err)
		full, _, err := v.Gather(shardTableB, 10)
		require.NoError(t, err)
		for pos := range 10 {
			want := make([]float32, 8)
			require.NoError(t, full.ReadFloat32s(want, full.Offset(pos, i, 0)))
			assert.Equal(t, want, headRow(t, k, pos, 0), "device %d position %d", i, pos)
		}
	}
	step := shardSteps(r, meta, "decodes")[0]
	want, err := step.apply(v, step.key, step.value)
	require.NoError(t, err)
	keys, values, err := s.SplitTokens(step.key, step.value, mesh)
	require.NoError(t, err)
	for i := range parts {
		parts[i], err = step.apply(parts[i], keys[i], values[i])
		require.NoError(t, err)
	}
	got, err := JoinViews(parts, meta, s, mesh)
	require.NoError(t, err)
	requireSameShardView(t, want, got)
}

func TestSplitErrors(t *testing.T) {
	meta := shardTestMeta(2)
	v := shardPrior(t, mrand.New(mrand.NewSource(3)), meta, tensor.Float32)
	mesh := shardMesh(t, 2, 2)
	good, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh)
	require.NoError(t, err)
	require.Equal(t, "PartitionSpec('tp', None, None, None)", good.KeyPages.String())

	tests := []struct {
		name     string
		specs    Specs
		sentinel error
		msg      string
	}{
		{"page axis", Specs{KeyPages: sharding.Spec{nil, {sharding.TP}, nil, nil}, ValuePages: good.ValuePages}, ErrSharding,
			"key pages spec PartitionSpec(None, 'tp', None, None) cuts the page axis (num_pages_per_layer 16): page tables index the whole pool into 2 blocks over 'tp'"},
		{"page offset axis", Specs{KeyPages: good.KeyPages, ValuePages: sharding.Spec{nil, nil, {sharding.DP}, nil}}, ErrSharding,
			"value pages spec PartitionSpec(None, None, 'dp', None) cuts the page-offset axis (page_size 4)"},
		{"key and value differ", Specs{KeyPages: good.KeyPages, ValuePages: sharding.Spec{nil, nil, nil, nil}}, ErrSharding,
			"key pages spec PartitionSpec('tp', None, None, None) and value pages spec PartitionSpec(None, None, None, None) cut the heads or head dim differently"},
		{"uncorrected", Specs{KeyPages: sharding.Spec{{sharding.DP, sharding.TP}, nil, nil, nil}, ValuePages: good.ValuePages}, sharding.ErrSpec,
			"key pages spec PartitionSpec(('dp', 'tp'), None, None, None) for shape [2 16 4 8]"},
		{"wrong rank", Specs{KeyPages: sharding.Spec{{sharding.TP}}, ValuePages: good.ValuePages}, sharding.ErrSpec, "key pages spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Split(tc.specs, mesh)
			require.ErrorIs(t, err, ErrSharding)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.msg)
			_, err = JoinViews([]View{v, v, v, v}, meta, tc.specs, mesh)
			assert.ErrorIs(t, err, ErrSharding)
		})
	}
	_, err = View{}.Split(good, mesh)
	assert.ErrorIs(t, err, ErrAbsentView)

	parts, err := v.Split(good, mesh)
	require.NoError(t, err)
	t.Run("replicas differ", func(t *testing.T) {
		// Device 2 (dp 1, tp 0) replicates device 0; only it takes a write.
		ps := append([]View(nil), parts...)
		x := shardRandKV(mrand.New(mrand.NewSource(1)), 1, 1, 8)
		ps[2], err = ps[2].WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{0}, DecodesPageTable: [][]int32{{15}}})
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "key pages: sharding: replicas differ: device 0 (id 0) and its replica device 2 (id 2)")
	})
	t.Run("count, absent, dtype, layer", func(t *testing.T) {
		_, err := JoinViews(parts[:3], meta, good, mesh)
		assert.ErrorIs(t, err, ErrSharding)
		ps := append([]View(nil), parts...)
		ps[1] = View{}
		_, err = JoinViews(ps, meta, good, mesh)
		assert.ErrorIs(t, err, ErrSharding)
		ps[1], err = NewView(parts[0].Metadata(), tensor.BFloat16, 1)
		require.NoError(t, err)
		_, err = JoinViews(ps, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 1 is bfloat16, shard view 0 is float32")
		ps[1], err = NewView(parts[0].Metadata(), tensor.Float32, 0)
		require.NoError(t, err)
		_, err = JoinViews(ps, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 1 has layer index 0, shard view 0 has 1")
	})
}

func TestSplitSharesOrLeavesZeroPagesUnallocated(t *testing.T) {
	meta := shardTestMeta(4)
	v := shardPrior(t, mrand.New(mrand.NewSource(5)), meta, tensor.Float32)

	// Replicated pages: every shard shares v's pool.
	mesh := shardMesh(t, 2, 1)
	s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh)
	require.NoError(t, err)
	parts, err := v.Split(s, mesh)
	require.NoError(t, err)
	for i, p := range parts {
		for c := range v.KeyPages().NumChunks() {
			require.True(t, p.KeyPages().SharesChunk(c, v.KeyPages(), c), "shard %d chunk %d", i, c)
		}
	}

	// Cut pages: copies in the pool layout; pages never written read as
	// zeros, and a decode into one appends at its start.
	mesh = shardMesh(t, 1, 2)
	s, err = v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh)
	require.NoError(t, err)
	parts, err = v.Split(s, mesh)
	require.NoError(t, err)
	for _, p := range parts {
		assert.Equal(t, meta.PageSize*meta.KVHeadDimSize, p.KeyPages().ChunkLen())
		assert.False(t, p.KeyPages().SharesChunk(3, v.KeyPages(), 3))
		k, _, err := p.Gather([]int32{15}, 4)
		require.NoError(t, err)
		assert.Equal(t, make([]float32, 4*2*8), k.Float32s())
	}
}

// Pages of 4 kv heads on a dp=2, tp=2 mesh: each tp shard holds 2 heads
// (the dp shards are replicas), writes its heads of a decode token through
// the same page table, and the joined pool is the unsharded one.
func ExampleView_Split() {
	meta := Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 4, NumPagesPerSequence: 2, MaxSequences: 8,
		PageSize: 4, NumKVHeads: 4, KVHeadDimSize: 2, HBMUtilization: 0.5}
	v, err := NewView(meta, tensor.Float32, 0)
	if err != nil {
		panic(err)
	}
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: 2, sharding.TP: 2}, Devices: sharding.UniformDevices(4, 1<<30)})
	if err != nil {
		panic(err)
	}
	specs, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh)
	if err != nil {
		panic(err)
	}
	fmt.Println("pages:", specs.KeyPages)
	shards, err := v.Split(specs, mesh)
	if err != nil {
		panic(err)
	}
	// One token, (1, 4 heads, 2): element (0, h, d) = 10h + d.
	tok := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{0, 1, 10, 11, 20, 21, 30, 31}, 1, 4, 2))
	keys, values, err := specs.SplitTokens(tok, tok, mesh)
	if err != nil {
		panic(err)
	}
	step := StepMetadata{DecodesPosition: []int32{5}, DecodesPageTable: [][]int32{{2, 3}}}
	for i := range shards {
		if shards[i], err = shards[i].WriteDecodes(keys[i], values[i], step); err != nil {
			panic(err)
		}
		fmt.Printf("device %d: %d kv heads, head 0 at page 3 offset 1: %v\n",
			i, shards[i].Metadata().NumKVHeads, shards[i].KeyPages().At(0, 3, 1, 0))
	}
	full, err := JoinViews(shards, meta, specs, mesh)
	if err != nil {
		panic(err)
	}
	k, _, err := full.Gather([]int32{2, 3}, 6)
	if err != nil {
		panic(err)
	}
	fmt.Println("joined, position 5, head 3:", k.At(5, 3, 0), k.At(5, 3, 1))
	// Output:
	// pages: PartitionSpec('tp', None, None, None)
	// device 0: 2 kv heads, head 0 at page 3 offset 1: 0
	// device 1: 2 kv heads, head 0 at page 3 offset 1: 20
	// device 2: 2 kv heads, head 0 at page 3 offset 1: 0
	// device 3: 2 kv heads, head 0 at page 3 offset 1: 20
	// joined, position 5, head 3: 30 31
}
