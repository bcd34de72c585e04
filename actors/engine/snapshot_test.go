package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

func TestCacheIDs(t *testing.T) {
	for _, tc := range []struct {
		layers []reference.LayerKind
		want   []string
	}{
		{[]reference.LayerKind{reference.LayerAttention}, []string{"kv"}},
		{[]reference.LayerKind{reference.LayerAttention, reference.LayerMamba2}, []string{"kv", "mamba2"}},
		{[]reference.LayerKind{reference.LayerLightning, reference.LayerAttention}, []string{"kv", "lightning"}},
		{[]reference.LayerKind{reference.LayerAttention, reference.LayerMamba2, reference.LayerLightning, reference.LayerAttention},
			[]string{"kv", "mamba2", "lightning"}},
	} {
		cfg := smallConfig()
		cfg.Model.Layers = tc.layers
		assert.Equal(t, tc.want, cfg.CacheIDs(), "layers %v", tc.layers)
	}
}

// Config.Snapshot sees every cache's final committed version, which is the
// version the caches hold after the run, and MarshalVersion encodes it as
// the kind's cache snapshot, which decodes back to the same views.
func TestSnapshotFinalVersions(t *testing.T) {
	cfg := smallConfig()
	cfg.Verify = 0
	got := map[string]actors.Version{}
	var order []string
	cfg.Snapshot = func(id string, v actors.Version) error {
		order = append(order, id)
		got[id] = v
		return nil
	}
	rt, err := actors.NewRuntime()
	require.NoError(t, err)
	defer rt.Close()
	ctx := context.Background()
	e, _, err := runOn(ctx, cfg, Embedded(rt))
	require.NoError(t, err)
	require.Equal(t, []string{"kv", "mamba2", "lightning"}, order, "one call per cache, in CacheIDs order")

	for id, c := range map[string]Cache{"kv": e.kv, "mamba2": e.m2, "lightning": e.lt} {
		now, err := c.Current(ctx)
		require.NoError(t, err)
		assert.Equal(t, now.Number, got[id].Number, "cache %s: the snapshot is of the last committed version", id)
		assert.Positive(t, now.Number, "cache %s was written", id)
	}

	data, err := MarshalVersion(got["kv"])
	require.NoError(t, err)
	kv, err := paged.UnmarshalCache(data)
	require.NoError(t, err)
	require.Equal(t, len(got["kv"].Views), kv.Len())
	for l, view := range got["kv"].Views {
		want := view.(paged.View)
		back, err := kv.View(l)
		require.NoError(t, err)
		assert.Equal(t, want.Metadata(), back.Metadata())
		assert.Equal(t, l, back.LayerIndex())
		assert.True(t, bytes.Equal(want.KeyPages().Bytes(), back.KeyPages().Bytes()), "kv layer %d: key pages differ", l)
		assert.True(t, bytes.Equal(want.ValuePages().Bytes(), back.ValuePages().Bytes()), "kv layer %d: value pages differ", l)
	}

	data, err = MarshalVersion(got["mamba2"])
	require.NoError(t, err)
	m2, err := mamba2.UnmarshalCache(data)
	require.NoError(t, err)
	require.Equal(t, len(got["mamba2"].Views), m2.Len())
	for l, view := range got["mamba2"].Views {
		want := view.(mamba2.View)
		back, err := m2.View(l)
		require.NoError(t, err)
		assert.Equal(t, want.Metadata(), back.Metadata())
		assert.Equal(t, want.Positions(), back.Positions())
		assert.Equal(t, want.SeqlenOffset(), back.SeqlenOffset())
		assert.True(t, bytes.Equal(want.SSMStates().Bytes(), back.SSMStates().Bytes()), "mamba2 layer %d: SSM states differ", l)
		assert.True(t, bytes.Equal(want.ConvStates().Bytes(), back.ConvStates().Bytes()), "mamba2 layer %d: conv states differ", l)
	}

	data, err = MarshalVersion(got["lightning"])
	require.NoError(t, err)
	lt, err := lightning.UnmarshalCache(data)
	require.NoError(t, err)
	for l, view := range got["lightning"].Views {
		want := view.(lightning.View)
		back, err := lt.View(l)
		require.NoError(t, err)
		require.True(t, want.HasKeyValue(), "lightning layer %d was written", l)
		assert.Equal(t, want.Metadata(), back.Metadata())
		assert.True(t, bytes.Equal(want.KeyValue().Bytes(), back.KeyValue().Bytes()), "lightning layer %d: key_value differs", l)
	}
}

func TestSnapshotErrorEndsTheRun(t *testing.T) {
	cfg := smallConfig()
	cfg.Verify = 0
	boom := errors.New("disk full")
	cfg.Snapshot = func(id string, _ actors.Version) error {
		if id == "mamba2" {
			return boom
		}
		return nil
	}
	_, err := Run(context.Background(), cfg)
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "snapshot of cache mamba2")
}

// A sharded version is joined layer by layer before it is encoded.
func TestMarshalVersionJoinsShards(t *testing.T) {
	rt, err := actors.NewRuntime()
	require.NoError(t, err)
	defer rt.Close()
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 4, SSMStateSize: 2, ConvKernelSize: 3})
	require.NoError(t, err)
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.TP: 2}, Devices: sharding.UniformDevices(2, 1<<30)})
	require.NoError(t, err)
	c, err := rt.NewCache("m", actors.Spec{Mamba: &actors.MambaSpec{Metadata: meta, DType: tensor.Float32}, Mesh: &mesh})
	require.NoError(t, err)
	col := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4))
	ctx := context.Background()
	_, _, err = c.Step(ctx, 0, []actors.LayerWrite{{Layer: 1, Write: &actors.MambaWrite{ConvSSM: actors.ConvSSM{ConvColumn: col, CachePosition: 2}}}})
	require.NoError(t, err)
	v, err := c.Current(ctx)
	require.NoError(t, err)
	_, sharded := v.Views[1].(*actors.Sharded)
	require.True(t, sharded, "layer 1 is held sharded")

	data, err := MarshalVersion(v)
	require.NoError(t, err)
	back, err := mamba.UnmarshalCache(data)
	require.NoError(t, err)
	full, err := v.Layer(1)
	require.NoError(t, err)
	got, err := back.View(1)
	require.NoError(t, err)
	assert.Equal(t, full.(mamba.View).ConvStates().Float64s(), got.ConvStates().Float64s())
	assert.Contains(t, got.ConvStates().Float64s(), 8.0, "the written column is in the snapshot")
}

func TestMarshalVersionErrors(t *testing.T) {
	mv, err := mamba.NewView(mamba.Metadata{NumHiddenLayers: 2, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2},
		tensor.Float32, nil)
	require.NoError(t, err)
	lv, err := lightning.NewView(lightning.Metadata{}, tensor.Float32, nil)
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		v    actors.Version
		want string
	}{
		{"no views", actors.Version{Number: 3}, "version 3 has no views"},
		{"not a view", actors.Version{Number: 1, Views: []any{42}}, "layer 0 is a int, not a cache view"},
		{"mixed kinds", actors.Version{Number: 2, Views: []any{mv, lv}}, "layer 1 is a lightning.View, layer 0 a mamba.View"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := MarshalVersion(tc.v)
			require.ErrorIs(t, err, ErrSnapshot)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}
