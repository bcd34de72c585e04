package lightning

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

// shardSlopes returns h random positive decay rates.
func shardSlopes(r *rand.Rand, h int) []float64 {
	s := make([]float64, h)
	for i := range s {
		s[i] = 0.05 + r.Float64()
	}
	return s
}

// shardDims are the state sizes of a test: (B, H, Dk, Dv).
type shardDims struct{ b, h, dk, dv int }

// shardPrior returns a view (layer 1) of meta; with prior, the state went
// through a random 3-token Update and row 1 was reset (its storage
// unallocated); without, the state is absent.
func shardPrior(t testing.TB, r *rand.Rand, meta Metadata, d shardDims, dtype tensor.DType, prior bool) View {
	t.Helper()
	layer := 1
	v, err := NewView(meta, dtype, &layer)
	require.NoError(t, err)
	if !prior {
		return v
	}
	v, err = v.Update(testkit.Rand(r, d.b, d.h, 3, d.dk), testkit.Rand(r, d.b, d.h, 3, d.dv), shardSlopes(r, d.h))
	require.NoError(t, err)
	v, err = v.ResetRows(1)
	require.NoError(t, err)
	return v
}

// checkShardedUpdate splits v and one write's inputs by specs, applies the
// write to every shard, joins, and requires the unsharded result.
func checkShardedUpdate(t *testing.T, r *rand.Rand, v View, meta Metadata, d shardDims, specs Specs, mesh sharding.Mesh, write string) {
	t.Helper()
	parts, err := v.Split(specs, mesh)
	require.NoError(t, err)
	join := func(ps []View) (View, error) { return JoinViews(ps, meta, specs, mesh) }
	if write == "replace state" {
		kv := testkit.Rand(r, d.b, d.h, d.dk, d.dv)
		testkit.ShardedWrites(t, v, parts, join, requireSameView, testkit.TensorWrite(kv, specs.KeyValue, mesh, View.UpdateKeyValue))
		return
	}
	testkit.ShardedWrites(t, v, parts, join, requireSameView, func(t *testing.T, whole View, parts []View) (View, []View) {
		tokens := 1
		if write == "update 2 tokens" {
			tokens = 2
		}
		key, value, slopes := testkit.Rand(r, d.b, d.h, tokens, d.dk), testkit.Rand(r, d.b, d.h, tokens, d.dv), shardSlopes(r, d.h)
		whole, err := whole.Update(key, value, slopes)
		require.NoError(t, err)
		keys, values, ss, err := specs.SplitUpdate(key, value, slopes, mesh)
		require.NoError(t, err)
		written := make([]View, len(parts))
		for i, p := range parts {
			written[i], err = p.Update(keys[i], values[i], ss[i])
			require.NoError(t, err)
		}
		return whole, written
	})
}

// TestShardedWriteEqualsUnsharded splits a view with prior writes (or an
// absent state) and a write's inputs by the view's specs, applies each
// shard's write to its shard view, joins, and requires the unsharded
// result byte for byte, for tp in {1, 2, 4} and dp in {1, 2}. With 6 heads
// tp 4 replicates the state's head axis (corrected to None).
func TestShardedWriteEqualsUnsharded(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	metas := []struct {
		name  string
		prior bool
		meta  func(d shardDims) MetadataConfig
	}{
		{"sizes given", true, func(d shardDims) MetadataConfig {
			return MetadataConfig{BatchSize: Ptr(d.b), NumHeads: Ptr(d.h), KeyDim: Ptr(d.dk), ValueDim: Ptr(d.dv)}
		}},
		{"sizes from the state", true, func(shardDims) MetadataConfig { return MetadataConfig{} }},
		{"absent state", false, func(d shardDims) MetadataConfig {
			return MetadataConfig{BatchSize: Ptr(d.b), KeyHeads: Ptr(d.h), ValueHeads: Ptr(d.h), KeyDim: Ptr(d.dk), ValueDim: Ptr(d.dv)}
		}},
	}
	seed := int64(0)
	for _, mc := range metas {
		for _, h := range []int{8, 6} {
			for _, fsdp := range []bool{true, false} {
				for _, dp := range []int{1, 2} {
					for _, tp := range []int{1, 2, 4} {
						for _, write := range []string{"update 1 token", "update 2 tokens", "replace state"} {
							seed++
							t.Run(fmt.Sprintf("%s/heads=%d/fsdp=%v/dp=%d/tp=%d/%s", mc.name, h, fsdp, dp, tp, write), func(t *testing.T) {
								r := rand.New(rand.NewSource(seed))
								d := shardDims{b: 4, h: h, dk: 4, dv: 3}
								meta, err := NewMetadata(mc.meta(d))
								require.NoError(t, err)
								mesh := testkit.ShardMesh(t, dp, tp, fsdp)
								v := shardPrior(t, r, meta, d, tensor.BFloat16, mc.prior)
								specs, err := v.Specs(pa, sharding.ModeDecode, mesh)
								require.NoError(t, err)
								require.Equal(t, h%tp == 0, !specs.KeyValue[1].IsNone())
								require.Equal(t, fsdp && dp > 1, specs.KeyValue[0].Blocks(mesh) > 1)
								checkShardedUpdate(t, r, v, meta, d, specs, mesh, write)
							})
						}
					}
				}
			}
		}
	}
}

// TestShardedWriteKeyDimCut cuts the key dim (a custom spec): the
// recurrence is per state element, so the shards still reproduce the
// unsharded update.
func TestShardedWriteKeyDimCut(t *testing.T) {
	d := shardDims{b: 4, h: 4, dk: 4, dv: 3}
	meta, err := NewMetadata(MetadataConfig{BatchSize: Ptr(4), NumHeads: Ptr(4), HeadDim: Ptr(3), KeyDim: Ptr(4)})
	require.NoError(t, err)
	r := rand.New(rand.NewSource(11))
	v := shardPrior(t, r, meta, d, tensor.Float32, true)
	mesh := testkit.ShardMesh(t, 2, 2, false)
	specs := Specs{KeyValue: sharding.Spec{{sharding.DP}, nil, {sharding.TP}, nil}}
	parts, err := v.Split(specs, mesh)
	require.NoError(t, err)
	sm := parts[0].Metadata()
	assert.Equal(t, [4]int{2, 4, 2, 3}, sm.StateShape())
	assert.Equal(t, 3, *sm.HeadDim, "head_dim sizes only the value dim, which is whole")
	checkShardedUpdate(t, r, v, meta, d, specs, mesh, "update 2 tokens")
}

func TestViewSpecs(t *testing.T) {
	d := shardDims{b: 4, h: 8, dk: 4, dv: 3}
	meta, err := NewMetadata(MetadataConfig{BatchSize: Ptr(4), NumHeads: Ptr(8), KeyDim: Ptr(4), ValueDim: Ptr(3)})
	require.NoError(t, err)
	v := shardPrior(t, rand.New(rand.NewSource(1)), meta, d, tensor.Float32, false)
	mesh := func(sizes map[string]int) sharding.Mesh { return testkit.Mesh(t, sizes) }
	tests := []struct {
		name               string
		mesh               sharding.Mesh
		kv                 string
		key, value, slopes string
	}{
		{
			// Resolved: (('fsdp', 'dp'), 'tp', None, None); fsdp is not in the mesh.
			name: "dp=2 tp=4", mesh: mesh(map[string]int{"dp": 2, "tp": 4}),
			kv: "PartitionSpec(None, 'tp', None, None)", key: "PartitionSpec(None, 'tp', None, None)",
			value: "PartitionSpec(None, 'tp', None, None)", slopes: "PartitionSpec('tp')",
		},
		{
			name: "fsdp=1 dp=2 tp=4", mesh: mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 4}),
			kv: "PartitionSpec(('fsdp', 'dp'), 'tp', None, None)", key: "PartitionSpec(('fsdp', 'dp'), 'tp', None, None)",
			value: "PartitionSpec(('fsdp', 'dp'), 'tp', None, None)", slopes: "PartitionSpec('tp')",
		},
		{
			// tp 16 does not divide 8 heads; sp shards nothing here.
			name: "fsdp=1 dp=2 tp=16 sp=2", mesh: mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 16, "sp": 2}),
			kv: "PartitionSpec(('fsdp', 'dp'), None, None, None)", key: "PartitionSpec(('fsdp', 'dp'), None, None, None)",
			value: "PartitionSpec(('fsdp', 'dp'), None, None, None)", slopes: "PartitionSpec(None)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, tc.mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.kv, s.KeyValue.String())
			k, val, sl := s.UpdateSpecs()
			assert.Equal(t, tc.key, k.String())
			assert.Equal(t, tc.value, val.String())
			assert.Equal(t, tc.slopes, sl.String())
		})
	}
	m2 := mesh(map[string]int{"tp": 2})
	_, err = View{}.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m2)
	assert.ErrorIs(t, err, ErrEmpty)
	_, err = v.Specs(sharding.DefaultPartitionAxis(), sharding.Mode("x"), m2)
	assert.ErrorIs(t, err, ErrSharding)
	assert.ErrorIs(t, err, sharding.ErrMode)

	unknown, err := NewView(Metadata{NumHeads: Ptr(2)}, tensor.Float32, nil)
	require.NoError(t, err)
	_, err = unknown.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m2)
	require.ErrorIs(t, err, ErrSharding)
	assert.Contains(t, err.Error(), "the key_value shape [0 2 0 0] is unknown: the state is absent and the metadata leaves batch_size None")
	_, err = unknown.Split(Specs{KeyValue: sharding.Spec{nil, nil, nil, nil}}, m2)
	assert.ErrorIs(t, err, ErrSharding)
}

// TestShardBytesMatchBudget checks that the shard views hold exactly the
// bytes per device that sharding.BytesPerDevice budgets for one layer.
func TestShardBytesMatchBudget(t *testing.T) {
	d := shardDims{b: 4, h: 8, dk: 4, dv: 3}
	meta, err := NewMetadata(MetadataConfig{BatchSize: Ptr(4), NumHeads: Ptr(8), KeyDim: Ptr(4), ValueDim: Ptr(3)})
	require.NoError(t, err)
	testkit.BytesMatchBudget(t, sharding.LightningShape{NumHiddenLayers: 1, BatchSize: 4, NumHeads: 8, KeyDim: 4, ValueDim: 3, DType: tensor.BFloat16},
		shardPrior(t, rand.New(rand.NewSource(2)), meta, d, tensor.BFloat16, true), View.Specs, View.Split, func(p View) int { return p.KeyValue().NumBytes() })
}

func TestSplitErrors(t *testing.T) {
	d := shardDims{b: 4, h: 4, dk: 4, dv: 4}
	meta, err := NewMetadata(MetadataConfig{BatchSize: Ptr(4), NumHeads: Ptr(4), HeadDim: Ptr(4)})
	require.NoError(t, err)
	v := shardPrior(t, rand.New(rand.NewSource(3)), meta, d, tensor.Float32, true)
	mesh := testkit.ShardMesh(t, 2, 2, true)
	good, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh)
	require.NoError(t, err)

	tests := []struct {
		name     string
		spec     sharding.Spec
		sentinel error
		msg      string
	}{
		{"head_dim sizes both dims", sharding.Spec{nil, nil, {sharding.TP}, nil}, ErrSharding,
			"key_value spec PartitionSpec(None, None, 'tp', None) cuts the key dim into 2 blocks and the value dim into 1, but head_dim 4 sizes both"},
		{"uncorrected", sharding.Spec{nil, {sharding.SP}, nil, nil}, sharding.ErrSpec,
			"key_value spec PartitionSpec(None, 'sp', None, None) for shape [4 4 4 4]"},
		{"wrong rank", sharding.Spec{nil, nil}, sharding.ErrSpec, "key_value spec PartitionSpec(None, None)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Split(Specs{KeyValue: tc.spec}, mesh)
			require.ErrorIs(t, err, ErrSharding)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.msg)
			_, err = JoinViews([]View{v, v, v, v}, meta, Specs{KeyValue: tc.spec}, mesh)
			assert.ErrorIs(t, err, ErrSharding)
		})
	}
	_, err = View{}.Split(good, mesh)
	assert.ErrorIs(t, err, ErrEmpty)

	parts, err := v.Split(good, mesh)
	require.NoError(t, err)
	t.Run("replicas differ", func(t *testing.T) {
		// Device 1 (dp 0, tp 1) replicates device 0 under a spec that cuts
		// only the batch; only it takes a write.
		s := Specs{KeyValue: sharding.Spec{good.KeyValue[0], nil, nil, nil}}
		ps, err := v.Split(s, mesh)
		require.NoError(t, err)
		ps[1], err = ps[1].ResetRows(0)
		require.NoError(t, err)
		_, err = JoinViews(ps, meta, s, mesh)
		require.ErrorIs(t, err, ErrSharding)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "key_value: sharding: replicas differ: device 0 (id 0) and its replica device 1 (id 1)")
	})
	t.Run("absent and present", func(t *testing.T) {
		ps := append([]View(nil), parts...)
		ps[2], err = ps[2].Reset()
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 2 has key_value None")
	})
	t.Run("count, empty, dtype, layer", func(t *testing.T) {
		testkit.JoinChecks(t, parts, 1, ErrSharding,
			func(ps []View) error { _, err := JoinViews(ps, meta, good, mesh); return err },
			func(dtype tensor.DType, layer *int) View {
				v, err := NewView(parts[1].Metadata(), dtype, layer)
				require.NoError(t, err)
				return v
			})
	})
}
