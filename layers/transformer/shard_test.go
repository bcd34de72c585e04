package transformer

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// shardMesh is testkit.ShardMesh.
var shardMesh = testkit.ShardMesh

// kvHeadsOverTP is the default PartitionAxis with kv heads sharded over tp,
// as newer eformer releases default (v0.0.38 leaves them replicated).
func kvHeadsOverTP() sharding.PartitionAxis {
	pa := sharding.DefaultPartitionAxis()
	pa.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	pa.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}
	return pa
}

// shardRandTensor returns a dense tensor of shape with seeded random values.
func shardRandTensor(r *rand.Rand, dtype tensor.DType, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = r.NormFloat64()
	}
	return tensor.Must(tensor.FromFloat64s(dtype, data, shape...))
}

// shardRandMask returns a mask of shape with about 3 in 4 elements true.
func shardRandMask(t testing.TB, r *rand.Rand, shape ...int) Mask {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]bool, n)
	for i := range data {
		data[i] = r.Intn(4) != 0
	}
	m, err := NewMask(shape, data)
	require.NoError(t, err)
	return m
}

// shardPrior builds a view with prior writes: a random prefill of 5 tokens
// per row, then per-row indexes cut back to 1..5 (so rows hold different
// lengths and the next write lands behind some chunk tips), random starts
// and layer index 3.
func shardPrior(t testing.TB, r *rand.Rand, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	return shardPriorStorage(t, r, meta, Storage{DType: dtype})
}

// shardPriorStorage is shardPrior for a view stored as st.
func shardPriorStorage(t testing.TB, r *rand.Rand, meta Metadata, st Storage) View {
	t.Helper()
	B := meta.BatchSize
	starts := make([]int32, B)
	index := make([]int32, B)
	for b := range B {
		starts[b] = int32(r.Intn(2))
		index[b] = int32(1 + r.Intn(5))
	}
	v, err := NewViewStorage(meta, st, starts, Ptr(3))
	require.NoError(t, err)
	v, err = v.Append(shardRandTensor(r, tensor.Float32, B, 5, meta.KeyHeads, meta.KeyDim), shardRandTensor(r, tensor.Float32, B, 5, meta.ValueHeads, meta.ValueDim))
	require.NoError(t, err)
	c := InitEmpty(1)
	c, err = c.WithView(0, v)
	require.NoError(t, err)
	c, err = c.InsertIndex(index, 0)
	require.NoError(t, err)
	v, err = c.View(0)
	require.NoError(t, err)
	return v
}

// requireSameShardView requires got and want to hold the same bytes in key and
// value (in codes and scales too when quantized), the same storage, index,
// starts, metadata, dtype and layer index.
func requireSameShardView(t testing.TB, want, got View) {
	t.Helper()
	require.Equal(t, want.Storage(), got.Storage())
	require.True(t, want.Key().Equal(got.Key()), "key differs")
	require.True(t, want.Value().Equal(got.Value()), "value differs")
	if want.IsQuantized() {
		require.True(t, want.KeyCodes().Equal(got.KeyCodes()), "key codes differ")
		require.True(t, want.KeyScales().Equal(got.KeyScales()), "key scales differ")
		require.True(t, want.ValueCodes().Equal(got.ValueCodes()), "value codes differ")
		require.True(t, want.ValueScales().Equal(got.ValueScales()), "value scales differ")
	}
	require.Equal(t, want.Index(), got.Index(), "index")
	require.Equal(t, want.Starts(), got.Starts(), "starts")
	require.Equal(t, want.Metadata(), got.Metadata())
	require.Equal(t, want.DType(), got.DType())
	wl, wok := want.LayerIndex()
	gl, gok := got.LayerIndex()
	require.Equal(t, wok, gok)
	require.Equal(t, wl, gl)
}

// shardMaskRows returns rows [lo, hi) of a mask whose leading axis is the batch.
func shardMaskRows(m Mask, lo, hi int) Mask {
	row := len(m.Data) / m.Shape[0]
	shape := append([]int{hi - lo}, m.Shape[1:]...)
	return Mask{Shape: shape, Data: append([]bool(nil), m.Data[lo*row:hi*row]...)}
}

// shardWrite is one write applied to a view and to its shards.
type shardWrite struct {
	name string
	q    int
	// concat selects ConcatenateToCache; false means Append.
	concat bool
	// full4D uses a (B, 1, q, S) attention mask and token types.
	full4D bool
}

var shardWrites = []shardWrite{
	{name: "append decode", q: 1},
	{name: "append chunk", q: 3},
	{name: "concatenate decode", q: 1, concat: true},
	{name: "concatenate chunk, 4-D mask, token types", q: 2, concat: true, full4D: true},
}

// TestShardedWriteEqualsUnsharded splits a view with prior writes and a
// write's inputs by the view's specs, applies each shard's write to its
// shard view, joins, and requires the unsharded write's view byte for
// byte, for tp in {1, 2, 4} and dp in {1, 2}.
func TestShardedWriteEqualsUnsharded(t *testing.T) {
	type heads struct{ key, value, valueDim int }
	pas := []struct {
		name string
		pa   sharding.PartitionAxis
	}{{"default", sharding.DefaultPartitionAxis()}, {"kv heads over tp", kvHeadsOverTP()}}
	headCases := []heads{
		{8, 8, 4}, // every tp divides the heads
		{4, 2, 3}, // tp 4 replicates the value heads (corrected to None), not the key heads
		{2, 2, 4}, // tp 4 replicates both
	}
	const B, S, D = 4, 16, 4
	seed := int64(1)
	for _, pc := range pas {
		for _, fsdp := range []bool{true, false} {
			for _, hc := range headCases {
				for _, dp := range []int{1, 2} {
					for _, tp := range []int{1, 2, 4} {
						for _, w := range shardWrites {
							seed++
							name := fmt.Sprintf("%s/fsdp=%v/heads=%d,%d/dp=%d/tp=%d/%s", pc.name, fsdp, hc.key, hc.value, dp, tp, w.name)
							t.Run(name, func(t *testing.T) {
								r := rand.New(rand.NewSource(seed))
								meta, err := NewMetadata(MetadataConfig{BatchSize: B, SequenceLength: S, NumHiddenLayers: 1,
									NumHeads: Ptr(hc.key), HeadDim: Ptr(D), ValueHeads: Ptr(hc.value), ValueDim: Ptr(hc.valueDim)})
								require.NoError(t, err)
								mesh := shardMesh(t, dp, tp, fsdp)
								checkShardedWrite(t, r, meta, Storage{DType: tensor.BFloat16}, pc.pa, mesh, nil, w)
							})
						}
					}
				}
			}
		}
	}
}

// checkShardedWrite runs one case of TestShardedWriteEqualsUnsharded: a view
// stored as st, cut by its specs for pa, edited by edit when not nil.
func checkShardedWrite(t *testing.T, r *rand.Rand, meta Metadata, st Storage, pa sharding.PartitionAxis, mesh sharding.Mesh, edit func(*Specs), w shardWrite) {
	B, S := meta.BatchSize, meta.SequenceLength
	v := shardPriorStorage(t, r, meta, st)
	mode := sharding.ModePrefill
	if w.q == 1 {
		mode = sharding.ModeDecode
	}
	specs, err := v.Specs(pa, mode, mesh)
	require.NoError(t, err)
	if edit != nil {
		edit(&specs)
	}
	shards, err := v.Split(specs, mesh)
	require.NoError(t, err)
	require.Len(t, shards, mesh.NumDevices())

	// The shard views are sized to their slices.
	tp := mesh.Size(sharding.TP)
	for _, sv := range shards {
		sm := sv.Metadata()
		assert.Equal(t, B/specs.Key[0].Blocks(mesh), sm.BatchSize)
		assert.Equal(t, S, sm.SequenceLength)
		assert.Equal(t, meta.KeyHeads/specs.Key[2].Blocks(mesh), sm.KeyHeads)
		assert.Equal(t, meta.ValueHeads/specs.Value[2].Blocks(mesh), sm.ValueHeads)
	}
	if specs.Key[2].IsNone() {
		assert.Equal(t, meta.KeyHeads, shards[0].Metadata().KeyHeads, "replicated key heads")
	} else {
		assert.Equal(t, meta.KeyHeads/tp, shards[0].Metadata().KeyHeads)
	}

	// Split then join without a write is the identity.
	back, err := JoinViews(shards, meta, specs, mesh)
	require.NoError(t, err)
	requireSameShardView(t, v, back)

	key := shardRandTensor(r, tensor.Float32, B, w.q, meta.KeyHeads, meta.KeyDim)
	value := shardRandTensor(r, tensor.Float32, B, w.q, meta.ValueHeads, meta.ValueDim)
	keys, values, err := specs.SplitWrite(key, value, mesh)
	require.NoError(t, err)

	var want View
	var wantMask Mask
	out := make([]View, len(shards))
	if !w.concat {
		want, err = v.Append(key, value)
		require.NoError(t, err)
		for i, sv := range shards {
			out[i], err = sv.Append(keys[i], values[i])
			require.NoError(t, err)
		}
	} else {
		query := shardRandTensor(r, tensor.Float32, B, w.q, 2, 2)
		attn := shardRandMask(t, r, B, S)
		opts := ConcatOptions{CausalMask: CausalMask(S)}
		if w.full4D {
			attn = shardRandMask(t, r, B, 1, w.q, S)
			opts.CausalMask = shardRandMask(t, r, B, 1, S, S)
			opts.TokenTypeIDs = make([][]int32, B)
			for b := range opts.TokenTypeIDs {
				opts.TokenTypeIDs[b] = []int32{int32(r.Intn(2)), int32(r.Intn(2)), 1}
			}
		}
		var k, val tensor.Tensor
		k, val, wantMask, want, err = v.ConcatenateToCache(query, key, value, attn, opts)
		require.NoError(t, err)
		require.True(t, k.Equal(want.Key()))
		require.True(t, val.Equal(want.Value()))

		queries, err := sharding.Split(query, specs.Key.Pick(0, -1, -1, -1), mesh)
		require.NoError(t, err)
		attns, err := specs.SplitMask(attn, mesh)
		require.NoError(t, err)
		optss, err := specs.SplitOptions(opts, mesh)
		require.NoError(t, err)
		rows, err := sharding.ShardSlices([]int{B}, specs.Index, mesh)
		require.NoError(t, err)
		for i, sv := range shards {
			var mask Mask
			_, _, mask, out[i], err = sv.ConcatenateToCache(queries[i], keys[i], values[i], attns[i], optss[i])
			require.NoError(t, err)
			rr := rows[i].Ranges[0]
			require.True(t, shardMaskRows(wantMask, rr.Start, rr.End).Equal(mask), "mask of shard %d (rows %v)", i, rr)
		}
	}
	got, err := JoinViews(out, meta, specs, mesh)
	require.NoError(t, err)
	requireSameShardView(t, want, got)
	// Both paths leave what the receiver can see unchanged (positions at
	// or past a row's index are unspecified: an in-place append at a
	// chunk's tip shows there).
	require.Equal(t, visible(t, back.Key(), back.Index()), visible(t, v.Key(), v.Index()))
	require.Equal(t, visible(t, back.Value(), back.Index()), visible(t, v.Value(), v.Index()))
}

func TestViewSpecs(t *testing.T) {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 4, SequenceLength: 16, NumHiddenLayers: 1,
		NumHeads: Ptr(8), HeadDim: Ptr(4), ValueHeads: Ptr(2)})
	require.NoError(t, err)
	v, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	mesh := func(sizes map[string]int) sharding.Mesh {
		n := 1
		for _, s := range sizes {
			n *= s
		}
		m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Devices: sharding.UniformDevices(n, 1)})
		require.NoError(t, err)
		return m
	}
	decodeBatchDP := sharding.DefaultPartitionAxis()
	decodeBatchDP.DecodeBatchAxis = sharding.MeshAxes{sharding.DP}

	tests := []struct {
		name                     string
		pa                       sharding.PartitionAxis
		mode                     sharding.Mode
		mesh                     sharding.Mesh
		key, value, index, start string
	}{
		{
			// Resolved: (('fsdp', 'dp'), 'sp', None, None). The mesh lacks
			// fsdp and sp, so eformer's correction replicates both entries.
			name: "default, dp=2 tp=4", pa: sharding.DefaultPartitionAxis(), mode: sharding.ModePrefill,
			mesh:  mesh(map[string]int{"dp": 2, "tp": 4}),
			key:   "PartitionSpec(None, None, None, None)",
			value: "PartitionSpec(None, None, None, None)",
			index: "PartitionSpec(None)", start: "PartitionSpec(None)",
		},
		{
			name: "default, fsdp=1 dp=2 tp=4", pa: sharding.DefaultPartitionAxis(), mode: sharding.ModePrefill,
			mesh:  mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 4}),
			key:   "PartitionSpec(('fsdp', 'dp'), None, None, None)",
			value: "PartitionSpec(('fsdp', 'dp'), None, None, None)",
			index: "PartitionSpec(('fsdp', 'dp'))", start: "PartitionSpec(('fsdp', 'dp'))",
		},
		{
			// v0.0.38 leaves KV_HEAD unsharded; kv heads over tp shard the 8
			// key heads, and tp=4 does not divide the 2 value heads.
			name: "kv heads over tp, fsdp=1 dp=2 tp=4", pa: kvHeadsOverTP(), mode: sharding.ModeDecode,
			mesh:  mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 4}),
			key:   "PartitionSpec(('fsdp', 'dp'), None, 'tp', None)",
			value: "PartitionSpec(('fsdp', 'dp'), None, None, None)",
			index: "PartitionSpec(('fsdp', 'dp'))", start: "PartitionSpec(('fsdp', 'dp'))",
		},
		{
			name: "kv heads over tp, dp=2 tp=2", pa: kvHeadsOverTP(), mode: sharding.ModePrefill,
			mesh:  mesh(map[string]int{"dp": 2, "tp": 2}),
			key:   "PartitionSpec(None, None, 'tp', None)",
			value: "PartitionSpec(None, None, 'tp', None)",
			index: "PartitionSpec(None)", start: "PartitionSpec(None)",
		},
		{
			// decode_batch_axis overrides batch_axis only in generation modes.
			name: "decode batch dp, decode", pa: decodeBatchDP, mode: sharding.ModeDecode,
			mesh:  mesh(map[string]int{"dp": 2, "tp": 4}),
			key:   "PartitionSpec('dp', None, None, None)",
			value: "PartitionSpec('dp', None, None, None)",
			index: "PartitionSpec('dp')", start: "PartitionSpec('dp')",
		},
		{
			name: "decode batch dp, prefill", pa: decodeBatchDP, mode: sharding.ModePrefill,
			mesh:  mesh(map[string]int{"dp": 2, "tp": 4}),
			key:   "PartitionSpec(None, None, None, None)",
			value: "PartitionSpec(None, None, None, None)",
			index: "PartitionSpec(None)", start: "PartitionSpec(None)",
		},
		{
			name: "default, fsdp=1 dp=1 sp=2", pa: sharding.DefaultPartitionAxis(), mode: sharding.ModePrefill,
			mesh:  mesh(map[string]int{"fsdp": 1, "dp": 1, "sp": 2}),
			key:   "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)",
			value: "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)",
			index: "PartitionSpec(('fsdp', 'dp'))", start: "PartitionSpec(('fsdp', 'dp'))",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Specs(tc.pa, tc.mode, tc.mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.key, s.Key.String())
			assert.Equal(t, tc.value, s.Value.String())
			assert.Equal(t, tc.index, s.Index.String())
			assert.Equal(t, tc.start, s.Starts.String())
		})
	}

	t.Run("resolution before correction", func(t *testing.T) {
		spec, err := sharding.Resolve(sharding.DefaultPartitionAxis(), KVAxes(), sharding.ModePrefill)
		require.NoError(t, err)
		assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)", spec.String())
	})

	t.Run("write specs replicate the token axis", func(t *testing.T) {
		s, err := v.Specs(kvHeadsOverTP(), sharding.ModeDecode, mesh(map[string]int{"fsdp": 1, "dp": 2, "sp": 2, "tp": 4}))
		require.NoError(t, err)
		assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), 'sp', 'tp', None)", s.Key.String())
		k, val := s.WriteSpecs()
		assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), None, 'tp', None)", k.String())
		assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), None, None, None)", val.String())
	})

	t.Run("errors", func(t *testing.T) {
		_, err := View{}.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh(map[string]int{"dp": 2}))
		assert.ErrorIs(t, err, ErrEmpty)
		_, err = v.Specs(sharding.DefaultPartitionAxis(), sharding.Mode("__bogus__"), mesh(map[string]int{"dp": 2}))
		assert.ErrorIs(t, err, ErrSharding)
		assert.ErrorIs(t, err, sharding.ErrMode)
	})
}

func TestSplitErrors(t *testing.T) {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 4, SequenceLength: 16, NumHiddenLayers: 1, NumHeads: Ptr(2), HeadDim: Ptr(4)})
	require.NoError(t, err)
	v := shardPrior(t, rand.New(rand.NewSource(9)), meta, tensor.Float32)

	t.Run("kv length over sp", func(t *testing.T) {
		m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{"fsdp": 1, "dp": 1, "sp": 2}, Devices: sharding.UniformDevices(2, 1)})
		require.NoError(t, err)
		s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m)
		require.NoError(t, err)
		_, err = v.Split(s, m)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "key spec PartitionSpec(('fsdp', 'dp'), 'sp', None, None) cuts the kv length axis (sequence_length 16) into 2 blocks over 'sp'")
		_, err = JoinViews([]View{v, v}, meta, s, m)
		assert.ErrorIs(t, err, ErrSharding)
	})

	mesh := shardMesh(t, 2, 4, true)
	good, err := v.Specs(kvHeadsOverTP(), sharding.ModePrefill, mesh)
	require.NoError(t, err)
	require.Equal(t, "PartitionSpec(('fsdp', 'dp'), None, None, None)", good.Key.String(), "tp 4 does not divide 2 kv heads")

	t.Run("uncorrected spec", func(t *testing.T) {
		s := good
		s.Key = sharding.Spec{nil, nil, {sharding.TP}, nil} // 4 does not divide 2 heads
		_, err := v.Split(s, mesh)
		require.ErrorIs(t, err, ErrSharding)
		require.ErrorIs(t, err, sharding.ErrSpec)
		assert.Contains(t, err.Error(), "key spec PartitionSpec(None, None, 'tp', None) for shape [4 16 2 4]")
	})
	t.Run("batch cut differently", func(t *testing.T) {
		s := good
		s.Starts = sharding.Spec{nil}
		_, err := v.Split(s, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "the key spec cuts the batch over ('fsdp', 'dp') but the starts spec over None")
	})
	t.Run("wrong rank", func(t *testing.T) {
		s := good
		s.Index = sharding.Spec{}
		_, err := v.Split(s, mesh)
		assert.ErrorIs(t, err, ErrSharding)
	})
	t.Run("empty view", func(t *testing.T) {
		_, err := View{}.Split(good, mesh)
		assert.ErrorIs(t, err, ErrEmpty)
	})

	shards, err := v.Split(good, mesh)
	require.NoError(t, err)
	t.Run("replicas differ", func(t *testing.T) {
		parts := append([]View(nil), shards...)
		// Device 1 (dp 0, tp 1) replicates device 0; only it takes a write.
		k := shardRandTensor(rand.New(rand.NewSource(1)), tensor.Float32, 2, 1, 2, 4)
		parts[1], err = parts[1].Append(k, k)
		require.NoError(t, err)
		_, err = JoinViews(parts, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.ErrorIs(t, err, sharding.ErrReplicaMismatch)
	})
	t.Run("wrong count, empty part, dtype, layer", func(t *testing.T) {
		_, err := JoinViews(shards[:3], meta, good, mesh)
		assert.ErrorIs(t, err, ErrSharding)

		parts := append([]View(nil), shards...)
		parts[2] = View{}
		_, err = JoinViews(parts, meta, good, mesh)
		assert.ErrorIs(t, err, ErrSharding)

		other, err := NewView(shards[0].Metadata(), tensor.BFloat16, nil, Ptr(3))
		require.NoError(t, err)
		parts[2] = other
		_, err = JoinViews(parts, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 2 is bfloat16, shard view 0 is float32")

		other, err = NewView(shards[0].Metadata(), tensor.Float32, nil, Ptr(4))
		require.NoError(t, err)
		parts[2] = other
		_, err = JoinViews(parts, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 2 has layer index 4, shard view 0 has 3")
	})
}

func TestSplitShares(t *testing.T) {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 1, NumHeads: Ptr(2), HeadDim: Ptr(2)})
	require.NoError(t, err)
	v := shardPrior(t, rand.New(rand.NewSource(3)), meta, tensor.Float32)
	mesh := shardMesh(t, 1, 2, false)
	s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh)
	require.NoError(t, err)
	require.True(t, s.Key.IsReplicated())
	shards, err := v.Split(s, mesh)
	require.NoError(t, err)
	for i, sv := range shards {
		for c := range v.Key().NumChunks() {
			require.True(t, sv.Key().SharesChunk(c, v.Key(), c), "shard %d chunk %d is shared, not copied", i, c)
		}
	}
}

func TestSplitMaskAndOptions(t *testing.T) {
	mesh := shardMesh(t, 2, 1, true)
	s := Specs{Index: sharding.Spec{{sharding.FSDP, sharding.DP}}}
	m := maskFromRows(t, []int{4, 3}, "xx.", "x..", "...", "xxx")
	parts, err := s.SplitMask(m, mesh)
	require.NoError(t, err)
	require.Len(t, parts, 2)
	assert.Equal(t, maskFromRows(t, []int{2, 3}, "xx.", "x.."), parts[0])
	assert.Equal(t, maskFromRows(t, []int{2, 3}, "...", "xxx"), parts[1])

	causal := CausalMask(3)
	parts, err = s.SplitMask(causal, mesh)
	require.NoError(t, err)
	assert.Equal(t, causal, parts[0], "a one-row mask goes whole to every device")
	assert.Equal(t, causal, parts[1])
	parts[0].Data[0] = false
	assert.True(t, causal.Data[0], "parts are copies")

	parts, err = s.SplitMask(Mask{}, mesh)
	require.NoError(t, err)
	assert.True(t, parts[0].IsZero() && parts[1].IsZero())

	_, err = s.SplitMask(maskFromRows(t, []int{3, 1}, "x", "x", "x"), mesh)
	assert.ErrorIs(t, err, ErrSharding)
	_, err = s.SplitMask(Mask{Shape: []int{2, 2}, Data: []bool{true}}, mesh)
	assert.ErrorIs(t, err, ErrSharding)

	opts, err := s.SplitOptions(ConcatOptions{CausalMask: causal, TokenTypeIDs: [][]int32{{1}, {2}, {3}, {4}}}, mesh)
	require.NoError(t, err)
	assert.Equal(t, [][]int32{{1}, {2}}, opts[0].TokenTypeIDs)
	assert.Equal(t, [][]int32{{3}, {4}}, opts[1].TokenTypeIDs)
	assert.Equal(t, causal, opts[1].CausalMask)
	_, err = s.SplitOptions(ConcatOptions{TokenTypeIDs: [][]int32{{1}}}, mesh)
	assert.ErrorIs(t, err, ErrSharding)
}

// A 4-row cache on a dp=2, tp=2 mesh with kv heads over tp: each device
// holds 2 rows and 2 of the 4 heads, appends its share of a decode token,
// and the joined view is the unsharded one.
func ExampleView_Split() {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 4, SequenceLength: 8, NumHiddenLayers: 1, NumHeads: Ptr(4), HeadDim: Ptr(2)})
	if err != nil {
		panic(err)
	}
	v, err := NewView(meta, tensor.Float32, nil, nil)
	if err != nil {
		panic(err)
	}
	mesh, err := sharding.NewMesh(sharding.MeshConfig{
		Sizes:   map[string]int{sharding.DP: 2, sharding.FSDP: 1, sharding.TP: 2},
		Devices: sharding.UniformDevices(4, 1<<30),
	})
	if err != nil {
		panic(err)
	}
	pa := sharding.DefaultPartitionAxis()
	pa.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	specs, err := v.Specs(pa, sharding.ModeDecode, mesh)
	if err != nil {
		panic(err)
	}
	fmt.Println("key:", specs.Key)
	fmt.Println("index:", specs.Index)

	shards, err := v.Split(specs, mesh)
	if err != nil {
		panic(err)
	}
	data := make([]float64, 4*1*4*2) // element (b, 0, h, d) = 8b + 2h + d
	for i := range data {
		data[i] = float64(i)
	}
	key := tensor.Must(tensor.FromFloat64s(tensor.Float32, data, 4, 1, 4, 2))
	keys, values, err := specs.SplitWrite(key, key, mesh)
	if err != nil {
		panic(err)
	}
	for i := range shards {
		if shards[i], err = shards[i].Append(keys[i], values[i]); err != nil {
			panic(err)
		}
		fmt.Printf("device %d: key %s, first element %v\n", i, shards[i].Key(), shards[i].Key().At(0, 0, 0, 0))
	}
	full, err := JoinViews(shards, meta, specs, mesh)
	if err != nil {
		panic(err)
	}
	fmt.Println("joined:", full.Key(), full.Index(), full.Key().At(3, 0, 3, 1))
	// Output:
	// key: PartitionSpec(('fsdp', 'dp'), None, 'tp', None)
	// index: PartitionSpec(('fsdp', 'dp'))
	// device 0: key float32[2 8 2 2], first element 0
	// device 1: key float32[2 8 2 2], first element 4
	// device 2: key float32[2 8 2 2], first element 16
	// device 3: key float32[2 8 2 2], first element 20
	// joined: float32[4 8 4 2] [1 1 1 1] 31
}
