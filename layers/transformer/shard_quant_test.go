package transformer

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// headDimOverTP edits specs to cut the key and value head dims over tp
// instead of the heads: a spec no PartitionAxis of the defaults resolves
// to, but one Split accepts.
func headDimOverTP(s *Specs) {
	s.Key[2], s.Key[3] = nil, sharding.MeshAxes{sharding.TP}
	s.Value[2], s.Value[3] = nil, sharding.MeshAxes{sharding.TP}
}

// TestShardedQuantizedWriteEqualsUnsharded is TestShardedWriteEqualsUnsharded
// for quantized storage: int8, NF4 with a block of 2 (half the head dim of
// 4) and NF4 with the default block, with kv heads cut over tp (and the
// batch over fsdp×dp), tp and dp in {1, 2}, every write. Join(Split(v)) is
// v and the shards' writes joined equal the unsharded write's view, codes
// and scales byte for byte. NF4 with a block of 2 also runs with the head
// dim cut over tp (shards of 2 values: whole blocks).
func TestShardedQuantizedWriteEqualsUnsharded(t *testing.T) {
	storages := []Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 2},
		{DType: tensor.Float32, Quantization: tensor.NF4},
	}
	const B, S, D = 4, 16, 4
	seed := int64(1000)
	for _, st := range storages {
		for _, cut := range []string{"kv heads", "head dim"} {
			if cut == "head dim" && st.BlockSize != 2 {
				continue
			}
			for _, dp := range []int{1, 2} {
				for _, tp := range []int{1, 2} {
					for _, w := range shardWrites {
						seed++
						t.Run(fmt.Sprintf("%s/%s/dp=%d/tp=%d/%s", st, cut, dp, tp, w.name), func(t *testing.T) {
							r := rand.New(rand.NewSource(seed))
							meta, err := NewMetadata(MetadataConfig{BatchSize: B, SequenceLength: S, NumHiddenLayers: 1,
								NumHeads: Ptr(4), HeadDim: Ptr(D), ValueHeads: Ptr(2), ValueDim: Ptr(D)})
							require.NoError(t, err)
							mesh := shardMesh(t, dp, tp, true)
							var edit func(*Specs)
							if cut == "head dim" {
								edit = headDimOverTP
							}
							checkShardedWrite(t, r, meta, st, kvHeadsOverTP(), mesh, edit, w)
						})
					}
				}
			}
		}
	}
}

// Quantized storage refuses a cut inside a stored row, naming the block
// and the shard width; shard views stored differently do not join, and
// replicas of codes or scales must agree.
func TestSplitQuantizedErrors(t *testing.T) {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 4, SequenceLength: 16, NumHiddenLayers: 1, NumHeads: Ptr(2), HeadDim: Ptr(4)})
	require.NoError(t, err)
	mesh := shardMesh(t, 1, 2, true)
	tests := []struct {
		name string
		st   Storage
		msg  string
	}{
		{"int8 head dim", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8},
			"key stored as bfloat16 8BIT: key spec PartitionSpec(('fsdp', 'dp'), None, None, 'tp'): int8 rows keep one scale per row of 4 values; cutting the head dim into 2 shards of 2 values would need a scale per shard"},
		{"nf4 block straddles", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4},
			"key stored as float32 NF4/4: key spec PartitionSpec(('fsdp', 'dp'), None, None, 'tp'): an nf4 block of 4 values would straddle the head-dim shards: the head dim 4 cut into 2 shards of 2 values"},
		{"nf4 default block straddles", Storage{DType: tensor.Float32, Quantization: tensor.NF4},
			"an nf4 block of 4 values would straddle the head-dim shards: the head dim 4 cut into 2 shards of 2 values"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := shardPriorStorage(t, rand.New(rand.NewSource(4)), meta, tc.st)
			specs, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh)
			require.NoError(t, err)
			headDimOverTP(&specs)
			_, err = v.Split(specs, mesh)
			require.ErrorIs(t, err, ErrSharding)
			assert.Contains(t, err.Error(), tc.msg)
			_, err = JoinViews([]View{v, v}, meta, specs, mesh)
			require.ErrorIs(t, err, ErrSharding)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	t.Run("value head dim only", func(t *testing.T) {
		// Keys whole, values cut: the value spec is named.
		v := shardPriorStorage(t, rand.New(rand.NewSource(5)), meta, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8})
		specs, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh)
		require.NoError(t, err)
		specs.Value[3] = sharding.MeshAxes{sharding.TP}
		_, err = v.Split(specs, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "value stored as bfloat16 8BIT: value spec PartitionSpec(('fsdp', 'dp'), None, None, 'tp'): int8 rows keep one scale per row of 4 values")
	})

	st := Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	v := shardPriorStorage(t, rand.New(rand.NewSource(6)), meta, st)
	dp2tp2 := shardMesh(t, 2, 2, true)
	good, err := v.Specs(kvHeadsOverTP(), sharding.ModeDecode, dp2tp2)
	require.NoError(t, err)
	require.Equal(t, "PartitionSpec(('fsdp', 'dp'), None, 'tp', None)", good.Key.String())
	parts, err := v.Split(good, dp2tp2)
	require.NoError(t, err)
	t.Run("storage differs", func(t *testing.T) {
		ps := append([]View(nil), parts...)
		ps[3], err = NewViewStorage(parts[0].Metadata(), Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 2}, nil, Ptr(3))
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, dp2tp2)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 3 is stored as bfloat16 NF4/2, shard view 0 as bfloat16 8BIT")
	})
	t.Run("replica codes differ", func(t *testing.T) {
		// One kv head on a tp-only mesh of 2: the devices replicate each
		// other; only device 1 takes a write.
		one, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 1, NumHeads: Ptr(1), HeadDim: Ptr(4)})
		require.NoError(t, err)
		x := shardPriorStorage(t, rand.New(rand.NewSource(7)), one, st)
		tp2 := shardMesh(t, 1, 2, true)
		s, err := x.Specs(kvHeadsOverTP(), sharding.ModeDecode, tp2)
		require.NoError(t, err)
		require.Equal(t, 1, s.Key[2].Blocks(tp2), "tp 2 does not divide 1 kv head")
		ps, err := x.Split(s, tp2)
		require.NoError(t, err)
		k := shardRandTensor(rand.New(rand.NewSource(1)), tensor.Float32, 2, 1, 1, 4)
		ps[1], err = ps[1].Append(k, k)
		require.NoError(t, err)
		// Index differs too; put it back so that the codes are what differ.
		c := InitEmpty(1)
		c, err = c.WithView(0, ps[1])
		require.NoError(t, err)
		c, err = c.InsertIndex(ps[0].Index(), 0)
		require.NoError(t, err)
		ps[1], err = c.View(0)
		require.NoError(t, err)
		_, err = JoinViews(ps, one, s, tp2)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "key: sharding: replicas differ: device 0 (id 0) and its replica device 1 (id 1)")
	})
}
