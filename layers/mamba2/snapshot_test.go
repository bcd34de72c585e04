package mamba2

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// snapshotCache returns a cache with written states, an empty layer, a
// partition axis and a view without layer index.
func snapshotCache(t testing.TB, dtype tensor.DType) Cache {
	t.Helper()
	// conv_dim 1 + 2*1*1 = 3, SSM state (2, 1, 3, 2).
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: 3, PartitionAxis: json.RawMessage(`{"batch_axis":["fsdp","dp"]}`),
		BatchSize: 2, IntermediateSize: 1, NumHeads: 1, HeadDim: 3, StateSize: 1, ConvKernelSize: 4, NGroups: 1})
	require.NoError(t, err)
	c, err := Init(m, dtype)
	require.NoError(t, err)
	c, err = c.UpdateConvState(0, testkit.Build(tensor.Float64, []int{2, 3}, func(i []int) float64 { return 0.1 + float64(i[0]+i[1]) }), 3)
	require.NoError(t, err)
	c, err = c.UpdateSSMState(0, testkit.Build(tensor.Float64, []int{2, 1, 3, 1}, func(i []int) float64 { return float64(i[0]) - 0.3*float64(i[2]) }))
	require.NoError(t, err)
	c, err = c.UpdateSeq(2)
	require.NoError(t, err)
	c, err = c.WithView(1, View{})
	require.NoError(t, err)
	v, err := NewView(m, dtype, nil)
	require.NoError(t, err)
	v, err = v.UpdateSSMState(testkit.Constant(tensor.Float64, 1.5, 2, 1, 3, 1))
	require.NoError(t, err)
	c, err = c.WithView(2, v)
	require.NoError(t, err)
	return c
}

// snapshots is the shared snapshot harness, for this package's views.
var snapshots = testkit.Snapshots[View, Cache]{
	UnmarshalView: UnmarshalView, UnmarshalCache: UnmarshalCache, SameView: requireSameView,
	Err: ErrSnapshot, ForeignFormat: "kvmesh.transformer.Cache/v1", StrayTensor: "conv_states",
}

func TestCacheSnapshotRoundTrip(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		back := snapshots.RoundTripCache(t, snapshotCache(t, d))

		// The decoded cache works like the original.
		u, err := back.UpdateConvState(0, testkit.Constant(tensor.Float32, 2, 2, 3), 3)
		require.NoError(t, err)
		assert.Equal(t, testkit.Filled(6, 2), testkit.Column(view(t, u, 0).ConvStates(), 3))
	}
}

func TestViewSnapshotRoundTrip(t *testing.T) {
	snapshots.RoundTripViews(t, snapshotCache(t, tensor.BFloat16))
}

func TestSnapshotErrors(t *testing.T) {
	raw, err := snapshotCache(t, tensor.Float32).MarshalBinary()
	require.NoError(t, err)
	edit := func(f func(s *tensor.Snapshot)) []byte { return testkit.EditSnapshot(t, raw, f) }
	snapshots.RefuseCaches(t, raw,
		testkit.SnapshotCase{Name: "invalid metadata", Data: edit(func(s *tensor.Snapshot) {
			s.Metadata["views.0.metadata"] = `{"num_hidden_layers":3,"batch_size":2,"intermediate_size":1,"num_heads":1,"head_dim":3,"state_size":1,"conv_kernel_size":4,"n_groups":0}`
		}), Msg: "n_groups must be positive"},
		testkit.SnapshotCase{Name: "missing seqlen offset", Data: edit(func(s *tensor.Snapshot) { delete(s.Metadata, "views.0.seqlen_offset") }), Msg: "views.0.seqlen_offset"},
		testkit.SnapshotCase{Name: "negative seqlen offset", Data: edit(func(s *tensor.Snapshot) { s.Metadata["views.2.seqlen_offset"] = "-1" }), Msg: "views.2.seqlen_offset"},
		testkit.SnapshotCase{Name: "wrong conv shape", Data: edit(func(s *tensor.Snapshot) {
			s.Tensors["views.0.conv_states"] = testkit.Constant(tensor.Float32, 0, 2, 3, 3)
		}), Msg: "conv_states"},
		testkit.SnapshotCase{Name: "missing ssm", Data: edit(func(s *tensor.Snapshot) { delete(s.Tensors, "views.0.ssm_states") }), Msg: "ssm_states"},
		testkit.SnapshotCase{Name: "mixed dtypes", Data: edit(func(s *tensor.Snapshot) {
			s.Tensors["views.0.ssm_states"] = testkit.Constant(tensor.Float16, 0, 2, 1, 3, 1)
		}), Msg: "want one dtype"},
		testkit.SnapshotCase{Name: "positions length", Data: edit(func(s *tensor.Snapshot) { s.Int32s["views.0.positions"] = []int32{0} }), Msg: "positions has 1 values"},
	)
}

func FuzzUnmarshalCache(f *testing.F) {
	var seeds [][]byte
	for _, c := range []Cache{snapshotCache(f, tensor.Float32), snapshotCache(f, tensor.BFloat16), InitEmpty(2)} {
		b, err := c.MarshalBinary()
		require.NoError(f, err)
		seeds = append(seeds, b)
	}
	snapshots.FuzzCaches(f, seeds...)
}
