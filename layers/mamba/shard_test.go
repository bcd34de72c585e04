package mamba

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

// shardPrior returns a view (layer 2) with prior writes: a random window
// and SSM state, then row 1 reset (its storage unallocated).
func shardPrior(t testing.TB, r *rand.Rand, meta Metadata, dtype tensor.DType) View {
	t.Helper()
	m := meta
	v, err := NewView(meta, dtype, func() *int { l := 2; return &l }())
	require.NoError(t, err)
	v, err = v.UpdateConvStatePositions(testkit.Rand(r, m.BatchSize, m.IntermediateSize, m.ConvKernelSize), testkit.Arange(m.ConvKernelSize))
	require.NoError(t, err)
	v, err = v.UpdateSSMState(testkit.Rand(r, m.BatchSize, m.IntermediateSize, m.SSMStateSize))
	require.NoError(t, err)
	v, err = v.ResetRows(1)
	require.NoError(t, err)
	return v
}

// shardUpdate is one write with its full inputs and the specs that cut them.
type shardUpdate struct {
	name  string
	apply func(v View, in tensor.Tensor) (View, error)
	input func(m Metadata) []int
	spec  func(s Specs) sharding.Spec
}

var shardUpdates = []shardUpdate{
	{"conv decode column", func(v View, in tensor.Tensor) (View, error) { return v.UpdateConvState(in, v.meta.ConvKernelSize-1) },
		func(m Metadata) []int { return []int{m.BatchSize, m.IntermediateSize} }, Specs.ColumnSpec},
	{"conv column at position 1", func(v View, in tensor.Tensor) (View, error) { return v.UpdateConvState(in, 1) },
		func(m Metadata) []int { return []int{m.BatchSize, m.IntermediateSize} }, Specs.ColumnSpec},
	{"conv window", func(v View, in tensor.Tensor) (View, error) {
		return v.UpdateConvStatePositions(in, []int32{0, 1, 2, 3})
	},
		func(m Metadata) []int { return []int{m.BatchSize, m.IntermediateSize, 4} }, Specs.WindowSpec},
	{"ssm state", func(v View, in tensor.Tensor) (View, error) { return v.UpdateSSMState(in) },
		func(m Metadata) []int { return []int{m.BatchSize, m.IntermediateSize, m.SSMStateSize} }, func(s Specs) sharding.Spec { return s.SSM }},
}

// TestShardedWriteEqualsUnsharded splits a view with prior writes and a
// decode step's inputs (conv column, then SSM state, and the other
// updates alone) by the view's specs, applies each shard's updates to its
// shard view, joins, and requires the unsharded result byte for byte, for
// tp in {1, 2, 4} and dp in {1, 2}. intermediate_size 6 is replicated by tp 4
// (corrected to None).
func TestShardedWriteEqualsUnsharded(t *testing.T) {
	pa := sharding.DefaultPartitionAxis()
	steps := [][]int{{0, 3}, {1}, {2}, {3}} // indexes into shardUpdates
	seed := int64(0)
	for _, inter := range []int{8, 6} {
		for _, fsdp := range []bool{true, false} {
			for _, dp := range []int{1, 2} {
				for _, tp := range []int{1, 2, 4} {
					for _, step := range steps {
						seed++
						name := fmt.Sprintf("I=%d/fsdp=%v/dp=%d/tp=%d/%s", inter, fsdp, dp, tp, shardUpdates[step[0]].name)
						if len(step) > 1 {
							name += " + ssm state"
						}
						t.Run(name, func(t *testing.T) {
							r := rand.New(rand.NewSource(seed))
							meta := testMeta(t, 1, 4, inter, 4, 4)
							mesh := testkit.ShardMesh(t, dp, tp, fsdp)
							v := shardPrior(t, r, meta, tensor.BFloat16)
							specs, err := v.Specs(pa, sharding.ModeDecode, mesh)
							require.NoError(t, err)
							if inter%tp == 0 {
								require.Equal(t, sharding.MeshAxes{sharding.TP}, specs.Conv[1])
							} else {
								require.True(t, specs.Conv[1].IsNone(), "tp %d does not divide intermediate_size %d", tp, inter)
							}
							require.Equal(t, fsdp && dp > 1, specs.Conv[0].Blocks(mesh) > 1)

							parts, err := v.Split(specs, mesh)
							require.NoError(t, err)
							for _, p := range parts {
								pm := p.Metadata()
								require.Equal(t, 4/specs.Conv[0].Blocks(mesh), pm.BatchSize)
								require.Equal(t, inter/specs.Conv[1].Blocks(mesh), pm.IntermediateSize)
							}
							var writes []testkit.ShardWrite[View]
							for _, u := range step {
								up := shardUpdates[u]
								writes = append(writes, testkit.TensorWrite(testkit.Rand(r, up.input(meta)...), up.spec(specs), mesh, up.apply))
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
	meta := testMeta(t, 1, 4, 8, 4, 4)
	v := shardPrior(t, rand.New(rand.NewSource(1)), meta, tensor.Float32)
	mesh := func(sizes map[string]int) sharding.Mesh { return testkit.Mesh(t, sizes) }
	tests := []struct {
		name            string
		mesh            sharding.Mesh
		conv, ssm, pos  string
		column, windows string
	}{
		{
			// Resolved: (('fsdp', 'dp'), 'tp', 'sp'); fsdp and sp are not in
			// the mesh.
			name: "dp=2 tp=4", mesh: mesh(map[string]int{"dp": 2, "tp": 4}),
			conv: "PartitionSpec(None, 'tp', None)", ssm: "PartitionSpec(None, 'tp', None)", pos: "PartitionSpec(None)",
			column: "PartitionSpec(None, 'tp')", windows: "PartitionSpec(None, 'tp', None)",
		},
		{
			name: "fsdp=1 dp=2 tp=4", mesh: mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 4}),
			conv: "PartitionSpec(('fsdp', 'dp'), 'tp', None)", ssm: "PartitionSpec(('fsdp', 'dp'), 'tp', None)", pos: "PartitionSpec(('fsdp', 'dp'))",
			column: "PartitionSpec(('fsdp', 'dp'), 'tp')", windows: "PartitionSpec(('fsdp', 'dp'), 'tp', None)",
		},
		{
			// tp 16 does not divide 8 channels; sp 2 divides K and N.
			name: "fsdp=1 dp=2 tp=16 sp=2", mesh: mesh(map[string]int{"fsdp": 1, "dp": 2, "tp": 16, "sp": 2}),
			conv: "PartitionSpec(('fsdp', 'dp'), None, 'sp')", ssm: "PartitionSpec(('fsdp', 'dp'), None, 'sp')", pos: "PartitionSpec(('fsdp', 'dp'))",
			column: "PartitionSpec(('fsdp', 'dp'), None)", windows: "PartitionSpec(('fsdp', 'dp'), None, None)",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, tc.mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.conv, s.Conv.String())
			assert.Equal(t, tc.ssm, s.SSM.String())
			assert.Equal(t, tc.pos, s.Positions.String())
			assert.Equal(t, tc.column, s.ColumnSpec().String())
			assert.Equal(t, tc.windows, s.WindowSpec().String())
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
	v := shardPrior(t, rand.New(rand.NewSource(2)), testMeta(t, 1, 4, 8, 4, 4), tensor.BFloat16)
	testkit.BytesMatchBudget(t, sharding.MambaShape{NumHiddenLayers: 1, BatchSize: 4, IntermediateSize: 8, SSMStateSize: 4, ConvKernelSize: 4, DType: tensor.BFloat16},
		v, View.Specs, View.Split, func(p View) int { return p.ConvStates().NumBytes() + p.SSMStates().NumBytes() + 4*len(p.Positions()) })
}

func TestSplitErrors(t *testing.T) {
	meta := testMeta(t, 1, 4, 8, 4, 4)
	v := shardPrior(t, rand.New(rand.NewSource(3)), meta, tensor.Float32)

	t.Run("kernel axis over sp", func(t *testing.T) {
		m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{"sp": 2, "tp": 2}, Devices: sharding.UniformDevices(4, 1)})
		require.NoError(t, err)
		s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m)
		require.NoError(t, err)
		_, err = v.Split(s, m)
		require.ErrorIs(t, err, ErrSharding)
		assert.Contains(t, err.Error(), "conv_states spec PartitionSpec(None, 'tp', 'sp') cuts the kernel axis (conv_kernel_size 4) into 2 blocks over 'sp'")
		_, err = JoinViews([]View{v, v, v, v}, meta, s, m)
		assert.ErrorIs(t, err, ErrSharding)
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
		{"batch cut differently", func(s *Specs) { s.Positions = sharding.Spec{nil} }, ErrSharding,
			"conv_states, ssm_states and positions specs cut the batch over ('fsdp', 'dp'), ('fsdp', 'dp') and None"},
		{"channels cut differently", func(s *Specs) { s.SSM = sharding.Spec{s.SSM[0], nil, nil} }, ErrSharding,
			"conv_states spec cuts intermediate_size over 'tp' but ssm_states spec over None"},
		{"uncorrected", func(s *Specs) { s.SSM = sharding.Spec{s.SSM[0], s.SSM[1], {"sp"}} }, sharding.ErrSpec,
			"ssm_states spec PartitionSpec(('fsdp', 'dp'), 'tp', 'sp') for shape [4 8 4]"},
		{"wrong rank", func(s *Specs) { s.Conv = s.Conv.Pick(0, 1) }, sharding.ErrSpec, "conv_states spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.edit(&s)
			_, err := v.Split(s, mesh)
			require.ErrorIs(t, err, ErrSharding)
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
	_, err = View{}.Split(good, mesh)
	assert.ErrorIs(t, err, ErrEmpty)

	parts, err := v.Split(good, mesh)
	require.NoError(t, err)
	t.Run("replicas differ", func(t *testing.T) {
		// With the states replicated over tp, device 1 replicates device 0;
		// only it takes a write.
		m := testkit.ShardMesh(t, 1, 2, false)
		s, err := v.Specs(sharding.DefaultPartitionAxis(), sharding.ModePrefill, m)
		require.NoError(t, err)
		s.SSM = sharding.Spec{nil, nil, nil} // replicated over tp
		s.Conv = sharding.Spec{nil, nil, nil}
		ps, err := v.Split(s, m)
		require.NoError(t, err)
		ps[1], err = ps[1].UpdateSSMState(testkit.Rand(rand.New(rand.NewSource(4)), 4, 8, 4))
		require.NoError(t, err)
		_, err = JoinViews(ps, meta, s, m)
		require.ErrorIs(t, err, ErrSharding)
		require.ErrorIs(t, err, sharding.ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "ssm_states: sharding: replicas differ: device 0 (id 0) and its replica device 1 (id 1)")
	})
	t.Run("count, empty, dtype, layer", func(t *testing.T) {
		testkit.JoinChecks(t, parts, 2, ErrSharding,
			func(ps []View) error { _, err := JoinViews(ps, meta, good, mesh); return err },
			func(dtype tensor.DType, layer *int) View {
				v, err := NewView(parts[1].Metadata(), dtype, layer)
				require.NoError(t, err)
				return v
			})
	})
}
