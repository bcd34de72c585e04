package paged

import (
	"fmt"
	mrand "math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// shardStorages are the quantized storages of the sharded tests: int8 with
// bfloat16 scales, NF4 with a block of 4 (half the head dim of 8, so a cut
// of the head dim over tp 2 keeps blocks whole) and NF4 with the default
// block (64, which the head dim 8 turns into one block per row).
var shardStorages = []Storage{
	{DType: tensor.BFloat16, Quantization: tensor.Int8},
	{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 4},
	{DType: tensor.Float32, Quantization: tensor.NF4},
}

// headDimOverTP cuts the pages' head dim over tp (and nothing else): a
// spec no PartitionAxis resolves to for pages, but one Split accepts.
func headDimOverTP() Specs {
	s := sharding.Spec{nil, nil, nil, {sharding.TP}}
	return Specs{KeyPages: s, ValuePages: s}
}

// TestShardedQuantizedWriteEqualsUnsharded is TestShardedWriteEqualsUnsharded
// for quantized pools: for int8 and NF4 storage, tp and dp in {1, 2}, and
// each step, Join(Split(v)) is v, and the shards' writes (tokens cut by
// SplitTokens; then stored rows of a gathered sequence cut by SplitStored
// and written with WriteStored), joined, equal the unsharded writes' view:
// codes and scales byte for byte. NF4 with a block of 4 also runs with the
// head dim cut over tp (shards of 4 values: whole blocks).
func TestShardedQuantizedWriteEqualsUnsharded(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	seed := int64(100)
	for _, st := range shardStorages {
		for _, cut := range []string{"kv heads", "head dim"} {
			if cut == "head dim" && st.BlockSize != 4 {
				continue
			}
			for _, dp := range []int{1, 2} {
				for _, tp := range []int{1, 2} {
					for _, step := range []string{"decodes", "prefill new sequence", "prefill chunk behind a page's tip", "decodes then prefill"} {
						seed++
						t.Run(fmt.Sprintf("%s/%s/dp=%d/tp=%d/%s", st, cut, dp, tp, step), func(t *testing.T) {
							r := mrand.New(mrand.NewSource(seed))
							meta := shardTestMeta(4)
							mesh := shardMesh(t, dp, tp)
							v := shardPriorStorage(t, r, meta, st)
							require.True(t, v.IsQuantized())
							steps := shardSteps(r, meta, step)
							specs, err := v.Specs(pa, sharding.ModeDecode, mesh)
							require.NoError(t, err)
							if cut == "head dim" {
								specs = headDimOverTP()
							}
							parts, err := v.Split(specs, mesh)
							require.NoError(t, err)
							require.Len(t, parts, dp*tp)
							for _, p := range parts {
								require.Equal(t, v.Storage(), p.Storage())
								require.True(t, p.IsQuantized())
								if cut == "head dim" {
									require.Equal(t, meta.KVHeadDimSize/tp, p.Metadata().KVHeadDimSize)
								} else {
									require.Equal(t, meta.NumKVHeads/tp, p.Metadata().NumKVHeads)
								}
							}
							want, parts := requireShardedSteps(t, v, parts, steps, meta, specs, mesh)

							// Stored rows: sequence B's 10 tokens, copied byte for
							// byte into the free pages 6, 8 and 10.
							rows, err := want.GatherStored(shardTableB, 10)
							require.NoError(t, err)
							m := StepMetadata{PrefillLength: 10, PrefillPageTable: []int32{6, 8, 10, 0}}
							want, err = want.WriteStored(rows, m)
							require.NoError(t, err)
							split, err := specs.SplitStored(rows, meta, mesh)
							require.NoError(t, err)
							for i := range parts {
								parts[i], err = parts[i].WriteStored(split[i], m)
								require.NoError(t, err)
							}
							got, err := JoinViews(parts, meta, specs, mesh)
							require.NoError(t, err)
							requireSameShardView(t, want, got)
						})
					}
				}
			}
		}
	}
}

// Quantized pools refuse a cut inside a stored row: int8 keeps one scale
// per row, an NF4 block must not straddle two shards, and packed NF4
// codes must not split a byte; the errors name the block and the shard
// width. Shard views stored differently do not join, and replicas of
// codes or scales must agree.
func TestSplitQuantizedErrors(t *testing.T) {
	meta := shardTestMeta(4)
	mesh := shardMesh(t, 1, 2)
	odd := meta
	odd.KVHeadDimSize = 6
	tests := []struct {
		name string
		meta Metadata
		st   Storage
		msg  string
	}{
		{"int8 head dim", meta, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8},
			"pages stored as bfloat16 8BIT: key pages spec PartitionSpec(None, None, None, 'tp'): int8 rows keep one scale per row of 8 values; cutting the head dim into 2 shards of 4 values would need a scale per shard"},
		{"nf4 block straddles", meta, Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 8},
			"an nf4 block of 8 values would straddle the head-dim shards: the head dim 8 cut into 2 shards of 4 values"},
		{"nf4 default block straddles", meta, Storage{DType: tensor.Float32, Quantization: tensor.NF4},
			"an nf4 block of 8 values would straddle the head-dim shards: the head dim 8 cut into 2 shards of 4 values"},
		{"nf4 odd shard width", odd, Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 3},
			"nf4 codes are packed two per byte: the head dim 6 cut into 2 shards of an odd 3 values would split a byte between shards"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := shardPriorStorage(t, mrand.New(mrand.NewSource(9)), tc.meta, tc.st)
			specs := headDimOverTP()
			_, err := v.Split(specs, mesh)
			require.ErrorIs(t, err, ErrSharding)
			assert.Contains(t, err.Error(), tc.msg)
			_, err = JoinViews([]View{v, v}, tc.meta, specs, mesh)
			require.ErrorIs(t, err, ErrSharding)
			assert.Contains(t, err.Error(), tc.msg)
			rows, err := v.GatherStored(shardTableB, 10)
			require.NoError(t, err)
			_, err = specs.SplitStored(rows, tc.meta, mesh)
			require.ErrorIs(t, err, ErrSharding)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}

	st := shardStorages[0]
	v := shardPriorStorage(t, mrand.New(mrand.NewSource(10)), meta, st)
	dp2tp2 := shardMesh(t, 2, 2)
	good, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, dp2tp2)
	require.NoError(t, err)
	parts, err := v.Split(good, dp2tp2)
	require.NoError(t, err)
	t.Run("storage differs", func(t *testing.T) {
		ps := append([]View(nil), parts...)
		ps[3], err = NewViewStorage(parts[0].Metadata(), Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 4}, 1)
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, dp2tp2)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 3 is stored as bfloat16 NF4/4, shard view 0 as bfloat16 8BIT")
	})
	t.Run("replica codes differ", func(t *testing.T) {
		// Device 3 (dp 1, tp 1) replicates device 1; only it takes a write.
		ps := append([]View(nil), parts...)
		x := shardRandKV(mrand.New(mrand.NewSource(1)), 1, 2, 8)
		ps[3], err = ps[3].WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{0}, DecodesPageTable: [][]int32{{15}}})
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, dp2tp2)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "key pages: sharding: replicas differ: device 1 (id 1) and its replica device 3 (id 3)")
	})
	t.Run("stored rows without scales", func(t *testing.T) {
		rows, err := v.GatherStored(shardTableB, 10)
		require.NoError(t, err)
		rows.ValueScales = tensor.Tensor{}
		_, err = good.SplitStored(rows, meta, dp2tp2)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "stored rows as bfloat16 8BIT: value scales is absent")
	})
}
