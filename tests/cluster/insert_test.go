//go:build !race

package cluster_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// Cache.Insert of a prefilled 2-row cache into rows 1 and 2 of a
// contiguous cache (rows that straddle the dp shards of a dp 2 x tp 2
// mesh) gives the embedded runtime's views byte for byte, unsharded and
// sharded; an insert past the batch is refused by both with an error that
// matches transformer.ErrOutOfRange (the grain's status code carries it).
func TestClusterInsertMatchesEmbedded(t *testing.T) {
	rt := newClient(t, startNodes(t, 2))
	emb, err := actors.NewRuntime()
	require.NoError(t, err)
	defer emb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	meta := func(batch int) transformer.Metadata {
		m, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: batch, SequenceLength: 12, NumHiddenLayers: 2,
			NumHeads: transformer.Ptr(2), HeadDim: transformer.Ptr(4)})
		require.NoError(t, err)
		return m
	}
	mesh := dp2tp2(t)
	for _, tc := range []struct {
		name string
		mesh *sharding.Mesh
	}{{"unsharded", nil}, {"dp2tp2", &mesh}} {
		t.Run(tc.name, func(t *testing.T) {
			spec := actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta(4), DType: tensor.BFloat16}, Mesh: tc.mesh}
			r := rand.New(rand.NewPCG(11, 11))
			pre, err := transformer.Init(meta(2), tensor.BFloat16, []int32{1, 0})
			require.NoError(t, err)
			for l := range 2 {
				v, err := pre.View(l)
				require.NoError(t, err)
				v, err = v.Append(randTensor(r, tensor.BFloat16, 2, 5, 2, 4), randTensor(r, tensor.BFloat16, 2, 5, 2, 4))
				require.NoError(t, err)
				pre, err = pre.WithView(l, v)
				require.NoError(t, err)
			}
			var first []actors.LayerWrite // a prefill chunk in every row: version 1
			for l := range 2 {
				k := randTensor(r, tensor.BFloat16, 4, 3, 2, 4)
				first = append(first, actors.LayerWrite{Layer: l, Write: &actors.TransformerWrite{Key: k, Value: k}})
			}
			id := "insert-" + tc.name
			e, err := emb.NewCache(id, spec)
			require.NoError(t, err)
			c, err := rt.NewCache(id, spec)
			require.NoError(t, err)
			for _, s := range []interface {
				Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (uint64, []actors.Result, error)
				Insert(ctx context.Context, base uint64, slot int, other transformer.Cache) (uint64, error)
			}{e, c} {
				_, _, err := s.Step(ctx, 0, first)
				require.NoError(t, err)
				v, err := s.Insert(ctx, 1, 1, pre)
				require.NoError(t, err)
				require.Equal(t, uint64(2), v)
				_, err = s.Insert(ctx, 2, 3, pre)
				require.ErrorIs(t, err, transformer.ErrOutOfRange, "rows 3 and 4 of a batch of 4")
			}
			ev, err := e.Current(ctx)
			require.NoError(t, err)
			cv, err := c.Current(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(2), ev.Number, "the refused insert published nothing")
			require.Equal(t, ev.Number, cv.Number)
			require.Equal(t, marshalViews(t, ev), marshalViews(t, cv))
			got, err := cv.Layer(1)
			require.NoError(t, err)
			require.Equal(t, []int32{3, 5, 5, 3}, got.(transformer.View).Index(), "rows 1 and 2 hold the prefill's 5 positions")
		})
	}
}
