package lightning

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// snapshotCache returns a cache with a present state, an absent one, an
// empty layer, and a view without layer index.
func snapshotCache(t testing.TB, dtype tensor.DType) Cache {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{PartitionAxis: json.RawMessage(`{"head_axis":"tp"}`), BatchSize: Ptr(2), NumHeads: Ptr(2), KeyDim: Ptr(3), ValueDim: Ptr(2)})
	require.NoError(t, err)
	c, err := Init(3, m, dtype)
	require.NoError(t, err)
	kv := testkit.Build(tensor.Float64, []int{2, 2, 3, 2}, func(i []int) float64 { return 0.1*float64(i[0]+2*i[1]) - float64(i[2]*i[3]) })
	c, err = c.UpdateKeyValue(0, kv)
	require.NoError(t, err)
	c, err = c.WithView(1, View{})
	require.NoError(t, err)
	v, err := NewView(Metadata{}, dtype, nil)
	require.NoError(t, err)
	v, err = v.UpdateKeyValue(testkit.Constant(tensor.Float64, 1.5, 1, 1, 1, 1))
	require.NoError(t, err)
	c, err = c.WithView(2, v)
	require.NoError(t, err)
	return c
}

// snapshots is the shared snapshot harness, for this package's views.
var snapshots = testkit.Snapshots[View, Cache]{
	UnmarshalView: UnmarshalView, UnmarshalCache: UnmarshalCache, SameView: requireSameView,
	Err: ErrSnapshot, ForeignFormat: "kvmesh.mamba.Cache/v1", StrayTensor: "key_value",
}

func TestCacheSnapshotRoundTrip(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		for _, c := range []Cache{snapshotCache(t, d), InitEmpty(2), mustInit(t, 2, d)} {
			snapshots.RoundTripCache(t, c)
		}
	}
	// A decoded absent state still checks the metadata on its first update.
	back, err := UnmarshalCache(must(mustInit(t, 1, tensor.Float32).MarshalBinary()))
	require.NoError(t, err)
	_, err = back.Update(0, testkit.Constant(tensor.Float32, 1, 3, 2, 1, 3), testkit.Constant(tensor.Float32, 1, 3, 2, 1, 2), []float64{0, 0})
	require.ErrorIs(t, err, ErrIncompatible)
}

func mustInit(t testing.TB, layers int, d tensor.DType) Cache {
	c, err := Init(layers, Metadata{BatchSize: Ptr(2)}, d)
	require.NoError(t, err)
	return c
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestViewSnapshotRoundTrip(t *testing.T) {
	absent, err := NewView(Metadata{}, tensor.Float16, nil)
	require.NoError(t, err)
	snapshots.RoundTripViews(t, snapshotCache(t, tensor.BFloat16), absent)
}

func TestSnapshotErrors(t *testing.T) {
	raw := must(snapshotCache(t, tensor.Float32).MarshalBinary())
	edit := func(f func(s *tensor.Snapshot)) []byte { return testkit.EditSnapshot(t, raw, f) }
	snapshots.RefuseCaches(t, raw,
		testkit.SnapshotCase{Name: "bad dtype", Data: edit(func(s *tensor.Snapshot) { s.Metadata["views.0.dtype"] = "int8" }), Msg: "views.0.dtype"},
		testkit.SnapshotCase{Name: "missing dtype", Data: edit(func(s *tensor.Snapshot) { delete(s.Metadata, "views.2.dtype") }), Msg: "views.2.dtype"},
		testkit.SnapshotCase{Name: "dtype mismatch", Data: edit(func(s *tensor.Snapshot) { s.Metadata["views.0.dtype"] = "float16" }),
			Msg: "key_value is float32, the view's dtype is float16"},
		testkit.SnapshotCase{Name: "shape vs metadata", Data: edit(func(s *tensor.Snapshot) {
			s.Tensors["views.0.key_value"] = testkit.Constant(tensor.Float32, 0, 2, 2, 3, 3)
		}), Msg: "value dim 3"},
		testkit.SnapshotCase{Name: "rank", Data: edit(func(s *tensor.Snapshot) {
			s.Tensors["views.2.key_value"] = testkit.Constant(tensor.Float32, 0, 1, 1, 1)
		}), Msg: "key_value has shape [1 1 1]"},
		testkit.SnapshotCase{Name: "invalid metadata", Data: edit(func(s *tensor.Snapshot) { s.Metadata["views.0.metadata"] = `{"num_heads":-1}` }),
			Msg: "num_heads must be positive"},
	)
}

func FuzzUnmarshalCache(f *testing.F) {
	snapshots.FuzzCaches(f, must(snapshotCache(f, tensor.Float32).MarshalBinary()), must(snapshotCache(f, tensor.BFloat16).MarshalBinary()),
		must(InitEmpty(2).MarshalBinary()), must(mustInit(f, 2, tensor.Float16).MarshalBinary()))
}
