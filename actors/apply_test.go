package actors

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// Apply computes what the layer's own update computes, leaves the input
// view alone, and refuses a write of another kind; LayerViews gives one
// unsharded view per layer even for a sharded spec.
func TestApplyAndLayerViews(t *testing.T) {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 3, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 2, ConvKernelSize: 3})
	require.NoError(t, err)
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.TP: 2}, Devices: sharding.UniformDevices(2, 1<<30)})
	require.NoError(t, err)
	views, err := Spec{Mamba: &MambaSpec{Metadata: meta, DType: tensor.Float32}, Mesh: &mesh}.LayerViews()
	require.NoError(t, err)
	require.Len(t, views, 3)
	v, ok := views[1].(mamba.View)
	require.True(t, ok, "layer 1 is a %T", views[1])

	col := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4))
	next, res, err := Apply(v, &MambaWrite{ConvSSM{ConvColumn: col, CachePosition: 2}})
	require.NoError(t, err)
	want, err := v.UpdateConvState(col, 2)
	require.NoError(t, err)
	assert.True(t, want.ConvStates().Equal(next.(mamba.View).ConvStates()))
	assert.Zero(t, res.Key)
	assert.Equal(t, make([]float64, 2*4*3), v.ConvStates().Float64s(), "the input view is unchanged")

	_, _, err = Apply(v, &LightningWrite{})
	require.ErrorIs(t, err, ErrKind)
	assert.Contains(t, err.Error(), "mamba.View")
	_, _, err = Apply(v, nil)
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Spec{}.LayerViews()
	require.ErrorIs(t, err, ErrInvalid)
}

// A write cut with SplitWrite and applied part by part, joined, is the
// write applied to the full view; ShardedViews refuses an unsharded spec
// and WithParts a wrong number of parts.
func TestSplitWriteOverShardedViews(t *testing.T) {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 2, ConvKernelSize: 3})
	require.NoError(t, err)
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.TP: 2}, Devices: sharding.UniformDevices(2, 1<<30)})
	require.NoError(t, err)
	spec := Spec{Mamba: &MambaSpec{Metadata: meta, DType: tensor.Float64}, Mesh: &mesh}
	layouts, err := spec.ShardedViews()
	require.NoError(t, err)
	require.Len(t, layouts, 2)
	require.Len(t, layouts[1].Parts(), 2)
	full, err := spec.LayerViews()
	require.NoError(t, err)

	vals := make([]float64, 8)
	for i := range vals {
		vals[i] = float64(i + 1)
	}
	w := &MambaWrite{ConvSSM{ConvColumn: tensor.Must(tensor.FromFloat64s(tensor.Float64, vals, 2, 4)), CachePosition: 1}}
	parts, err := SplitWrite(w, layouts[1])
	require.NoError(t, err)
	require.Len(t, parts, 2)
	next := make([]any, 2)
	for i, p := range parts {
		next[i], _, err = Apply(layouts[1].Parts()[i], p)
		require.NoError(t, err)
	}
	joined, err := layouts[1].WithParts(next)
	require.NoError(t, err)
	got, err := joined.Join()
	require.NoError(t, err)
	want, _, err := Apply(full[1], w)
	require.NoError(t, err)
	assert.Equal(t, want.(mamba.View).ConvStates().Float64s(), got.(mamba.View).ConvStates().Float64s())

	_, err = layouts[1].WithParts(next[:1])
	require.ErrorIs(t, err, ErrInvalid)
	_, err = Spec{Mamba: &MambaSpec{Metadata: meta, DType: tensor.Float64}}.ShardedViews()
	require.ErrorIs(t, err, ErrInvalid)
	_, err = SplitWrite(nil, layouts[0])
	require.ErrorIs(t, err, ErrInvalid)
}
