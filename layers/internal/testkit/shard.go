package testkit

import (
	"math/rand"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// ShardMesh returns a mesh of dp×tp devices (dp major) of 1 GiB each, with
// an fsdp axis of size 1 when withFSDP: eformer's batch rule ('fsdp', 'dp')
// applies only when both axes are in the mesh.
func ShardMesh(t testing.TB, dp, tp int, withFSDP bool) sharding.Mesh {
	t.Helper()
	sizes := map[string]int{sharding.DP: dp, sharding.TP: tp}
	if withFSDP {
		sizes[sharding.FSDP] = 1
	}
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Devices: sharding.UniformDevices(dp*tp, 1<<30)})
	require.NoError(t, err)
	return m
}

// Mesh returns a mesh of the given axis sizes in the default device order
// (dp, fsdp, tp, sp: dp slowest), of devices of 1 byte.
func Mesh(t testing.TB, sizes map[string]int) sharding.Mesh {
	t.Helper()
	n := 1
	for _, s := range sizes {
		n *= s
	}
	m, err := sharding.NewMesh(sharding.MeshConfig{Sizes: sizes, Devices: sharding.UniformDevices(n, 1)})
	require.NoError(t, err)
	return m
}

// Rand returns a float32 tensor of shape holding r's normal values.
func Rand(r *rand.Rand, shape ...int) tensor.Tensor {
	return Build(tensor.Float32, shape, func([]int) float64 { return r.NormFloat64() })
}

// JoinChecks requires join to refuse shard views that do not agree, with
// errors wrapping sentinel: too few views, an empty view 1, a view 1 of
// another dtype ("shard view 1 is bfloat16, shard view 0 is float32") and
// a view 1 without a layer index ("shard view 1 has layer index None,
// shard view 0 has <layer>"). parts are a Split's float32 shard views of
// layer index layer; replace(dtype, layerIndex) returns a view to put in
// place of parts[1], agreeing with it in everything else.
func JoinChecks[V any](t *testing.T, parts []V, layer int, sentinel error, join func(parts []V) error, replace func(dtype tensor.DType, layerIndex *int) V) {
	t.Helper()
	assert.ErrorIs(t, join(parts[:len(parts)-1]), sentinel)
	ps := append([]V(nil), parts...)
	var empty V
	ps[1] = empty
	assert.ErrorIs(t, join(ps), sentinel)
	ps[1] = replace(tensor.BFloat16, &layer)
	err := join(ps)
	require.ErrorIs(t, err, sentinel)
	assert.Contains(t, err.Error(), "shard view 1 is bfloat16, shard view 0 is float32")
	ps[1] = replace(tensor.Float32, nil)
	err = join(ps)
	require.ErrorIs(t, err, sentinel)
	assert.Contains(t, err.Error(), "shard view 1 has layer index None, shard view 0 has "+strconv.Itoa(layer))
}

// ShardWrite applies one write to a whole view and to its shard views (part
// i with device i's slice of the write's inputs) and returns them written.
type ShardWrite[V any] func(t *testing.T, whole V, parts []V) (V, []V)

// TensorWrite is the ShardWrite of apply with the input in, cut for the
// parts by spec over mesh; a zero in (a write without input) gives every
// part a zero input too.
func TensorWrite[V any](in tensor.Tensor, spec sharding.Spec, mesh sharding.Mesh, apply func(V, tensor.Tensor) (V, error)) ShardWrite[V] {
	return func(t *testing.T, whole V, parts []V) (V, []V) {
		t.Helper()
		ins := make([]tensor.Tensor, len(parts))
		if !in.IsZero() {
			var err error
			ins, err = sharding.Split(in, spec, mesh)
			require.NoError(t, err)
		}
		whole, err := apply(whole, in)
		require.NoError(t, err)
		parts = append([]V(nil), parts...)
		for i := range parts {
			parts[i], err = apply(parts[i], ins[i])
			require.NoError(t, err)
		}
		return whole, parts
	}
}

// ShardedWrites requires join(parts), the shard views of v, to give v
// back, applies the writes in order to v and to the parts, and requires
// join of the written parts to give the written v (same compares views
// byte for byte), v itself unchanged.
func ShardedWrites[V any](t *testing.T, v V, parts []V, join func(parts []V) (V, error), same func(t testing.TB, want, got V), writes ...ShardWrite[V]) {
	t.Helper()
	back, err := join(parts)
	require.NoError(t, err)
	same(t, v, back)
	want := v
	for _, w := range writes {
		want, parts = w(t, want, parts)
	}
	got, err := join(parts)
	require.NoError(t, err)
	same(t, want, got)
	same(t, v, back) // the receiver is unchanged
}

// BytesMatchBudget requires the shard views of v, one layer, split for a
// mesh of 2×tp devices with an fsdp axis (tp in {1, 2, 4}) by the specs of
// the default partition axis in prefill mode (specs, split: the package's
// View.Specs and View.Split), to hold exactly the bytes per device that
// sharding.BytesPerDevice budgets for c; bytes counts the bytes a shard
// view holds.
func BytesMatchBudget[V, S any](t *testing.T, c sharding.CacheShape, v V,
	specs func(v V, pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (S, error),
	split func(v V, s S, mesh sharding.Mesh) ([]V, error), bytes func(V) int) {
	t.Helper()
	pa := sharding.DefaultPartitionAxis()
	for _, tp := range []int{1, 2, 4} {
		mesh := ShardMesh(t, 2, tp, true)
		want, err := sharding.BytesPerDevice(c, pa, mesh)
		require.NoError(t, err)
		s, err := specs(v, pa, sharding.ModePrefill, mesh)
		require.NoError(t, err)
		parts, err := split(v, s, mesh)
		require.NoError(t, err)
		for i, p := range parts {
			assert.Equal(t, want, int64(bytes(p)), "tp %d, device %d", tp, i)
		}
	}
}
