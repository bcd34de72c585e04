//go:build !race

package cluster_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/actors/transfer"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// A clustered cache is a transfer.Cache and a transfer.StateCache:
// ApplyPaged and ApplyRecurrent write into it.
var (
	_ transfer.Cache      = (*cluster.Cache)(nil)
	_ transfer.StateCache = (*cluster.Cache)(nil)
)

// An int8 sequence (bfloat16 scales) prefilled on an embedded cache and
// packed with transfer.PagedSequence lands, through transfer.ApplyPaged,
// in a clustered cache on real nodes, unsharded and with its kv heads cut
// over tp 2: one new version whose pages (other physical pages) hold the
// sender's codes and scales byte for byte. A clustered receiver stored
// unquantized refuses it with an error naming both formats (the grain's
// *actors.StatusError; on a mesh the client's refusal, wrapping
// paged.ErrStorageMismatch) and publishes nothing.
func TestApplyPagedIntoClusteredCache(t *testing.T) {
	rt := newClient(t, startNodes(t, 2))
	emb, err := actors.NewRuntime()
	require.NoError(t, err)
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const length = 13 // ends mid-page
	meta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 12, NumPagesPerSequence: 11,
		MaxSequences: 44, PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 64, HBMUtilization: 0.5}
	st := paged.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	quantized := actors.PagedSpec{Metadata: meta, DType: st.DType, Quantization: st.Quantization}

	src, err := emb.NewCache("prefill", actors.Spec{Paged: &quantized})
	require.NoError(t, err)
	srcTable := []int32{0, 1, 2, 3}
	r := rand.New(rand.NewPCG(21, length))
	var writes []actors.LayerWrite
	for l := range meta.NumHiddenLayers {
		writes = append(writes, actors.LayerWrite{Layer: l, Write: &actors.PagedWrite{
			PrefillKey: randTensor(r, tensor.Float32, length, 2, 64), PrefillValue: randTensor(r, tensor.Float32, length, 2, 64),
			Step: paged.StepMetadata{PrefillLength: length, PrefillPageTable: srcTable}}})
	}
	_, _, err = src.Step(ctx, 0, writes)
	require.NoError(t, err)
	sent, err := src.Current(ctx)
	require.NoError(t, err)
	bundle, err := transfer.PagedSequence(sent, srcTable, length, nil)
	require.NoError(t, err)
	require.Equal(t, st.Quantization.String(), bundle.Metadata[transfer.MetaQuantization])

	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.TP: 2}, Devices: sharding.UniformDevices(2, 1<<30)})
	require.NoError(t, err)
	kvOverTP := sharding.DefaultPartitionAxis()
	kvOverTP.KVHeadAxis = sharding.MeshAxes{sharding.TP}
	kvOverTP.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}
	for _, tc := range []struct {
		name string
		mesh *sharding.Mesh
		axis *sharding.PartitionAxis
	}{{"unsharded", nil, nil}, {"kv heads over tp2", &mesh, &kvOverTP}} {
		t.Run(tc.name, func(t *testing.T) {
			dst, err := rt.NewCache("decode/"+tc.name, actors.Spec{Paged: &quantized, Mesh: tc.mesh, PartitionAxis: tc.axis})
			require.NoError(t, err)
			table := []int32{9, 4, 11, 6}
			v, err := transfer.ApplyPaged(ctx, dst, 0, table, bundle)
			require.NoError(t, err)
			assert.Equal(t, uint64(1), v)
			got, err := dst.Current(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(1), got.Number)
			for l := range meta.NumHiddenLayers {
				sv, err := sent.Layer(l)
				require.NoError(t, err)
				dv, err := got.Layer(l)
				require.NoError(t, err)
				require.True(t, dv.(paged.View).IsQuantized(), "layer %d", l)
				want, err := sv.(paged.View).GatherStored(srcTable, length)
				require.NoError(t, err)
				have, err := dv.(paged.View).GatherStored(table, length)
				require.NoError(t, err)
				assert.Equal(t, want.Storage, have.Storage)
				for _, c := range []struct {
					name       string
					want, have tensor.Tensor
				}{{"key codes", want.Key, have.Key}, {"value codes", want.Value, have.Value},
					{"key scales", want.KeyScales, have.KeyScales}, {"value scales", want.ValueScales, have.ValueScales}} {
					assert.Equal(t, c.want.Shape(), c.have.Shape(), "layer %d %s", l, c.name)
					assert.True(t, bytes.Equal(c.want.Bytes(), c.have.Bytes()), "layer %d: the %s differ", l, c.name)
				}
				// The clustered view holds int8 codes, not values.
				codes := dv.(paged.View).KeyCodes()
				require.False(t, codes.IsZero())
				assert.Equal(t, tensor.I8, codes.DType())
			}

			plain, err := rt.NewCache("plain/"+tc.name, actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: tensor.BFloat16},
				Mesh: tc.mesh, PartitionAxis: tc.axis})
			require.NoError(t, err)
			_, err = transfer.ApplyPaged(ctx, plain, 0, table, bundle)
			require.Error(t, err)
			assert.ErrorContains(t, err, "rows stored as bfloat16 8BIT into a view stored as bfloat16 (")
			assert.ErrorContains(t, err, "cache plain/"+tc.name)
			if tc.mesh != nil {
				assert.True(t, errors.Is(err, paged.ErrStorageMismatch), "a mesh-cut receiver refuses on the client: %v", err)
			} else {
				var se *actors.StatusError
				assert.True(t, errors.As(err, &se), "the grain's refusal is its status: %v", err)
			}
			cur, err := plain.Current(ctx)
			require.NoError(t, err)
			assert.Zero(t, cur.Number, "the refusing receiver published nothing")
		})
	}
}

// A clustered state cache is a transfer.StateCache: ApplyRecurrent writes
// a Mamba2 row packed from an embedded cache into a row of a clustered
// one, unsharded and cut over dp 2 x tp 2; that row then holds the
// sender's states byte for byte and the other rows keep theirs.
func TestApplyRecurrentIntoClusteredCache(t *testing.T) {
	rt := newClient(t, startNodes(t, 2))
	emb, err := actors.NewRuntime()
	require.NoError(t, err)
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	spec := kindCases(t)[2].spec // mamba2, batch 2
	require.NotNil(t, spec.Mamba2)
	r := rand.New(rand.NewPCG(5, 5))
	fill := func(c transfer.StateCache) actors.Version {
		v0, err := c.Snapshot(ctx, 0)
		require.NoError(t, err)
		var ws []actors.LayerWrite
		for l := range v0.Views {
			view, err := v0.Layer(l)
			require.NoError(t, err)
			mv := view.(mamba2.View)
			ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.Mamba2Write{ConvSSM: actors.ConvSSM{
				ConvWindow: randTensor(r, tensor.Float32, mv.ConvStates().Shape()...), SSMState: randTensor(r, tensor.Float32, mv.SSMStates().Shape()...)}}})
		}
		_, _, err = c.Step(ctx, 0, ws)
		require.NoError(t, err)
		v, err := c.Snapshot(ctx, 1)
		require.NoError(t, err)
		return v
	}
	src, err := emb.NewCache("recurrent-src", spec)
	require.NoError(t, err)
	sent := fill(src)
	states, err := transfer.RecurrentRow("m2", sent, 1)
	require.NoError(t, err)
	b := transfer.Bundle{Metadata: map[string]string{}}
	for n, x := range states {
		b.Names, b.Tensors = append(b.Names, n), append(b.Tensors, x)
	}
	mesh := dp2tp2(t)
	for _, tc := range []struct {
		name string
		mesh *sharding.Mesh
	}{{"unsharded", nil}, {"dp2tp2", &mesh}} {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			s.Mesh = tc.mesh
			dst, err := rt.NewCache("recurrent-dst-"+tc.name, s)
			require.NoError(t, err)
			before := fill(dst)
			v, err := transfer.ApplyRecurrent(ctx, dst, 1, 0, "m2", b)
			require.NoError(t, err)
			require.Equal(t, uint64(2), v)
			after, err := dst.Current(ctx)
			require.NoError(t, err)
			for l := range after.Views {
				got, err := after.Layer(l)
				require.NoError(t, err)
				was, err := before.Layer(l)
				require.NoError(t, err)
				from, err := sent.Layer(l)
				require.NoError(t, err)
				g, w, f := got.(mamba2.View), was.(mamba2.View), from.(mamba2.View)
				for _, st := range []struct {
					name          string
					got, was, src tensor.Tensor
				}{{"conv", g.ConvStates(), w.ConvStates(), f.ConvStates()}, {"ssm", g.SSMStates(), w.SSMStates(), f.SSMStates()}} {
					n := st.got.Len() / st.got.Dim(0) // values per row
					gv, wv, sv := st.got.Float64s(), st.was.Float64s(), st.src.Float64s()
					assert.Equal(t, sv[n:2*n], gv[:n], "layer %d %s: row 0 holds the sender's row 1", l, st.name)
					assert.Equal(t, wv[n:], gv[n:], "layer %d %s: row 1 keeps its state", l, st.name)
				}
			}
		})
	}
}
