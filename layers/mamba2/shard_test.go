package mamba2

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// shardFill returns a view of meta (layer 2) with a random window and SSM
// state, and seq advanced by seq.
func shardFill(t testing.TB, r *rand.Rand, meta Metadata, dtype tensor.DType, seq int) View {
	t.Helper()
	m := meta
	layer := 2
	v, err := NewView(meta, dtype, &layer)
	require.NoError(t, err)
	v, err = v.UpdateConvStatePositions(testkit.Rand(r, m.BatchSize, m.ConvDim(), m.ConvKernelSize), testkit.Arange(m.ConvKernelSize))
	require.NoError(t, err)
	v, err = v.UpdateSSMState(testkit.Rand(r, m.BatchSize, m.NumHeads, m.HeadDim, m.StateSize))
	require.NoError(t, err)
	v, err = v.UpdateSeq(seq)
	require.NoError(t, err)
	return v
}

// shardPrior returns a view with prior writes: random states with seq 3,
// row 2 replaced by a row at seq 7 and row 1 reset, so positions differ by
// row ([3 0 7 3]) and row 1's storage is unallocated.
func shardPrior(t testing.TB, r *rand.Rand, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	v := shardFill(t, r, meta, dtype, 3)
	one := meta.clone()
	one.BatchSize = 1
	v, err := v.Insert(shardFill(t, r, one, dtype, 7), 2)
	require.NoError(t, err)
	v, err = v.ResetRows(1)
	require.NoError(t, err)
	require.Equal(t, []int32{3, 0, 7, 3}, v.Positions())
	return v
}

// shardUpdate is one write; input returns its full input's shape (nil for
// none) and spec the spec that cuts it.
type shardUpdate struct {
	name  string
	apply func(v View, in tensor.Tensor) (View, error)
	input func(m Metadata) []int
	spec  func(s Specs) sharding.Spec
}

var (
	updColumnDecode = shardUpdate{"conv decode column", func(v View, in tensor.Tensor) (View, error) { return v.UpdateConvState(in, v.meta.ConvKernelSize-1) },
		func(m Metadata) []int { return []int{m.BatchSize, m.ConvDim()} }, Specs.ColumnSpec}
	updColumnAt1 = shardUpdate{"conv column at position 1", func(v View, in tensor.Tensor) (View, error) { return v.UpdateConvState(in, 1) },
		func(m Metadata) []int { return []int{m.BatchSize, m.ConvDim()} }, Specs.ColumnSpec}
	updWindow = shardUpdate{"conv window", func(v View, in tensor.Tensor) (View, error) {
		return v.UpdateConvStatePositions(in, []int32{3, 0, 1, 2})
	}, func(m Metadata) []int { return []int{m.BatchSize, m.ConvDim(), 4} }, Specs.WindowSpec}
	updSSM = shardUpdate{"ssm state", func(v View, in tensor.Tensor) (View, error) { return v.UpdateSSMState(in) },
		func(m Metadata) []int { return []int{m.BatchSize, m.NumHeads, m.HeadDim, m.StateSize} }, func(s Specs) sharding.Spec { return s.SSM }}
	updSeq = shardUpdate{"update seq", func(v View, _ tensor.Tensor) (View, error) { return v.UpdateSeq(1) }, nil, nil}
)

// TestShardedWriteEqualsUnsharded splits a view with prior writes and the
// inputs of a decode step (conv column, SSM state, UpdateSeq) or of one
// update alone by the view's specs, applies each shard's updates to its
// shard view, joins, and requires the unsharded result byte for byte, for
// tp in {1, 2, 4} and dp in {1, 2}. In the second size set tp 4 divides
// neither conv_dim 10 nor the 6 heads: both are replicated (corrected to
// None).
func TestShardedWriteEqualsUnsharded(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	sizes := []dims{
		{layers: 1, b: 4, i: 16, h: 8, p: 2, n: 2, k: 4, g: 4}, // conv_dim 32; every tp divides heads, groups, intermediate
		{layers: 1, b: 4, i: 6, h: 6, p: 2, n: 1, k: 4, g: 2},  // conv_dim 10
	}
	steps := [][]shardUpdate{
		{updColumnDecode, updSSM, updSeq},
		{updColumnAt1},
		{updWindow},
		{updSSM},
		{updSeq},
	}
	seed := int64(0)
	for _, d := range sizes {
		for _, fsdp := range []bool{true, false} {
			for _, dp := range []int{1, 2} {
				for _, tp := range []int{1, 2, 4} {
					for _, step := range steps {
						seed++
						names := make([]string, len(step))
						for i, u := range step {
							names[i] = u.name
						}
						name := fmt.Sprintf("conv_dim=%d,heads=%d/fsdp=%v/dp=%d/tp=%d/%s", d.i+2*d.g*d.n, d.h, fsdp, dp, tp, strings.Join(names, " + "))
						t.Run(name, func(t *testing.T) {
							r := rand.New(rand.NewSource(seed))
							meta := testMeta(t, d)
							mesh := testkit.ShardMesh(t, dp, tp, fsdp)
							v := shardPrior(t, r, meta, tensor.BFloat16)
							specs, err := v.Specs(pa, sharding.ModeDecode, mesh)
							require.NoError(t, err)
							require.Equal(t, meta.ConvDim()%tp == 0, !specs.Conv[1].IsNone())
							require.Equal(t, d.h%tp == 0, !specs.SSM[1].IsNone())
							require.Equal(t, fsdp && dp > 1, specs.Conv[0].Blocks(mesh) > 1)

							parts, err := v.Split(specs, mesh)
							require.NoError(t, err)
							for _, p := range parts {
								pm := p.Metadata()
								kc := specs.Conv[1].Blocks(mesh)
								require.Equal(t, d.b/specs.Conv[0].Blocks(mesh), pm.BatchSize)
								require.Equal(t, d.i/kc, pm.IntermediateSize)
								require.Equal(t, d.g/kc, pm.NGroups)
								require.Equal(t, meta.ConvDim()/kc, pm.ConvDim())
								require.Equal(t, d.h/specs.SSM[1].Blocks(mesh), pm.NumHeads)
								require.Equal(t, v.SeqlenOffset(), p.SeqlenOffset())
							}
							var writes []testkit.ShardWrite[View]
							for _, up := range step {
								var in tensor.Tensor
								var spec sharding.Spec
								if up.input != nil {
									in, spec = testkit.Rand(r, up.input(meta)...), up.spec(specs)
								}
								writes = append(writes, testkit.TensorWrite(in, spec, mesh, up.apply))
							}
							testkit.ShardedWrites(t, v, parts, func(ps []View) (View, error) { return JoinViews(ps, meta, specs, mesh) }, requireSameView, writes...)
						})
					}
				}
			}
		}
	}
}

func TestViewSpecs(t *testing.T) {
	meta := testMeta(t, dims{layers: 1, b: 4, i: 16, h: 8, p: 2, n: 2, k: 4, g: 4})
	v := shardPrior(t, rand.New(rand.NewSource(1)), meta, tensor.Float32)
	mesh := func(sizes map[string]int) sharding.Mesh { return testkit.Mesh(t, sizes) }
	tests := []struct {
		name           string
		mesh           sharding.Mesh
		conv, ssm, pos string
	}{
		{
			// Resolved: (('fsdp', 'dp'), 'tp', 'sp'), padded with None for
			// the rank-4 SSM state; fsdp and sp are not in the mesh.
			name: "dp=2 tp=4", mesh: mesh(map[string]int{"dp": 2, "tp": 4}),
			conv: "PartitionSpec(None, 'tp', None)", ssm: "PartitionSpec(None, 'tp', None, None)", pos: "PartitionSpec(None)",
		},
		{
			name: "fsdp=1 dp=2 tp=4", mesh: mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 4}),
			conv: "PartitionSpec(('fsdp', 'dp'), 'tp', None)", ssm: "PartitionSpec(('fsdp', 'dp'), 'tp', None, None)", pos: "PartitionSpec(('fsdp', 'dp'))",
		},
		{
			// sp 2 divides K 4 and head_dim 2 (the SSM state's third axis).
			name: "fsdp=1 dp=1 tp=2 sp=2", mesh: mesh(map[string]int{"fsdp": 1, "dp": 1, "tp": 2, "sp": 2}),
			conv: "PartitionSpec(('fsdp', 'dp'), 'tp', 'sp')", ssm: "PartitionSpec(('fsdp', 'dp'), 'tp', 'sp', None)", pos: "PartitionSpec(('fsdp', 'dp'))",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, tc.mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.conv, s.Conv.String())
			assert.Equal(t, tc.ssm, s.SSM.String())
			assert.Equal(t, tc.pos, s.Positions.String())
			assert.Equal(t, s.Conv.Pick(0, 1).String(), s.ColumnSpec().String())
			assert.Equal(t, s.Conv.Pick(0, 1, -1).String(), s.WindowSpec().String())
		})
	}
	_, err := View{}.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh(map[string]int{"tp": 2}))
	assert.ErrorIs(t, err, ErrEmpty)
	_, err = v.Specs(sharding.DefaultPartitionAxis(), sharding.Mode("x"), mesh(map[string]int{"tp": 2}))
	assert.ErrorIs(t, err, ErrSharding)
	assert.ErrorIs(t, err, sharding.ErrMode)
}

// TestShardBytesMatchBudget checks that the shard views hold exactly the
// bytes per device that sharding.BytesPerDevice budgets for one layer.
func TestShardBytesMatchBudget(t *testing.T) {
	d := dims{layers: 1, b: 4, i: 16, h: 8, p: 2, n: 2, k: 4, g: 4}
	v := shardPrior(t, rand.New(rand.NewSource(2)), testMeta(t, d), tensor.BFloat16)
	testkit.BytesMatchBudget(t, sharding.Mamba2Shape{NumHiddenLayers: 1, BatchSize: d.b, IntermediateSize: d.i,
		NumHeads: d.h, HeadDim: d.p, StateSize: d.n, ConvKernelSize: d.k, NGroups: d.g, DType: tensor.BFloat16},
		v, View.Specs, View.Split, func(p View) int { return p.ConvStates().NumBytes() + p.SSMStates().NumBytes() + 4*len(p.Positions()) })
}

func TestSplitErrors(t *testing.T) {
	meta := testMeta(t, dims{layers: 1, b: 4, i: 16, h: 8, p: 2, n: 2, k: 4, g: 4})
	v := shardPrior(t, rand.New(rand.NewSource(3)), meta, tensor.Float32)

	t.Run("groups not divisible", func(t *testing.T) {
		// conv_dim 8 + 2·1·4 = 16: tp 2 divides it, but not n_groups 1.
		m1 := testMeta(t, dims{layers: 1, b: 4, i: 8, h: 4, p: 2, n: 4, k: 4, g: 1})
		v1 := shardPrior(t, rand.New(rand.NewSource(4)), m1, tensor.Float32)
		mesh := testkit.ShardMesh(t, 1, 2, false)
		s, err := v1.Specs(sharding.DefaultPartitionAxis(), sharding.ModeDecode, mesh)
		require.NoError(t, err)
		require.Equal(t, "PartitionSpec(None, 'tp', None)", s.Conv.String())
		_, err = v1.Split(s, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "conv_states spec PartitionSpec(None, 'tp', None) cuts conv_dim 16 into 2 blocks over 'tp', but 2 does not divide intermediate_size 8 and n_groups 1")
	})
	t.Run("kernel axis over sp", func(t *testing.T) {
		m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{"sp": 2, "tp": 2}, Devices: sharding.UniformDevices(4, 1)})
		require.NoError(t, err)
		s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m)
		require.NoError(t, err)
		_, err = v.Split(s, m)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "conv_states spec PartitionSpec(None, 'tp', 'sp') cuts the kernel axis (conv_kernel_size 4) into 2 blocks over 'sp'")
	})

	mesh := testkit.ShardMesh(t, 2, 2, true)
	good, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, mesh)
	require.NoError(t, err)
	tests := []struct {
		name     string
		edit     func(s *Specs)
		sentinel error
		msg      string
	}{
		{"batch cut differently", func(s *Specs) { s.SSM = sharding.Spec{nil, s.SSM[1], nil, nil} }, ErrSharding,
			"conv_states, ssm_states and positions specs cut the batch over ('fsdp', 'dp'), None and ('fsdp', 'dp')"},
		{"state size", func(s *Specs) { s.SSM = sharding.Spec{s.SSM[0], nil, nil, {sharding.TP}} }, ErrSharding,
			"ssm_states spec PartitionSpec(('fsdp', 'dp'), None, None, 'tp') cuts state_size 2 into 2 blocks over 'tp'"},
		{"uncorrected", func(s *Specs) { s.Positions = sharding.Spec{{sharding.SP}} }, sharding.ErrSpec,
			"positions spec PartitionSpec('sp') for shape [4]"},
		{"wrong rank", func(s *Specs) { s.SSM = s.SSM.Pick(0, 1, 2) }, sharding.ErrSpec, "ssm_states spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			_, err := v.Split(s, mesh)
			require.ErrorIs(t, err, ErrSharding)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.msg)
			_, err = JoinViews([]View{v, v, v, v}, meta, s, mesh)
			assert.ErrorIs(t, err, ErrSharding)
		})
	}
	_, err = View{}.Split(good, mesh)
	assert.ErrorIs(t, err, ErrEmpty)

	parts, err := v.Split(good, mesh)
	require.NoError(t, err)
	t.Run("seqlen offset differs", func(t *testing.T) {
		ps := append([]View(nil), parts...)
		ps[3], err = ps[3].UpdateSeq(1)
		require.NoError(t, err)
		_, err := JoinViews(ps, meta, good, mesh)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "shard view 3 has seqlen_offset 4, shard view 0 has 3")
	})
	t.Run("replicas differ", func(t *testing.T) {
		// Without fsdp the batch is replicated: device 2 (dp 1, tp 0)
		// replicates device 0; only it takes a write.
		m := testkit.ShardMesh(t, 2, 2, false)
		s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m)
		require.NoError(t, err)
		ps, err := v.Split(s, m)
		require.NoError(t, err)
		ps[2], err = ps[2].ResetRows(0)
		require.NoError(t, err)
		_, err = JoinViews(ps, meta, s, m)
		require.ErrorIs(t, err, ErrSharding)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "conv_states: sharding: replicas differ: device 0 (id 0) and its replica device 2 (id 2)")
	})
	t.Run("count, empty, dtype, layer", func(t *testing.T) {
		testkit.JoinChecks(t, parts, 2, ErrSharding,
			func(ps []View) error { _, err := JoinViews(ps, meta, good, mesh); return err },
			func(dtype tensor.DType, layer *int) View {
				v, err := NewView(parts[1].Metadata(), dtype, layer)
				require.NoError(t, err)
				v, err = v.UpdateSeq(3) // the parts' seqlen_offset
				require.NoError(t, err)
				return v
			})
	})
}
