package actors

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/pagemanager"
)

func poolSpec() Spec {
	meta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 4, HBMUtilization: 0.5}
	return Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.Float32,
		Pool: &pagemanager.PoolConfig{PrefixCaching: true, Events: true}}}
}

// The pool actor publishes every KV event on the event stream, in order and
// without gaps, and a second sequence with the same prompt hits the cached
// pages the first one registered.
func TestPoolEventsOnTheEventStream(t *testing.T) {
	rt := newRuntime(t)
	var mu sync.Mutex
	var got []*KVEvent
	sub := rt.System().EventStream.Subscribe(func(e any) {
		if kv, ok := e.(*KVEvent); ok {
			mu.Lock()
			got = append(got, kv)
			mu.Unlock()
		}
	})
	defer rt.System().EventStream.Unsubscribe(sub)

	c, err := rt.NewCache("p", poolSpec())
	require.NoError(t, err)
	ctx := context.Background()
	prompt := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	step, pages, err := c.AddSequence(ctx, 1, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	assert.Equal(t, 0, step.HitTokens)
	assert.Len(t, pages, 3)
	require.NoError(t, c.FreeSequence(ctx, 1))
	step, pages2, err := c.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	assert.Equal(t, 8, step.HitTokens, "two full pages come from the prefix cache")
	assert.Equal(t, pages[:2], pages2[:2])
	_, err = c.ForkSequence(ctx, 2, 3)
	require.NoError(t, err)
	_, _, err = c.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt})
	require.ErrorIs(t, err, ErrInvalid, "sequence 2 exists: an invalid argument across the boundary")

	// Publish is synchronous on the pool actor's goroutine, before its reply.
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, got)
	s := pagemanager.NewSubscriber(1)
	for _, e := range got {
		assert.Equal(t, "p", e.Cache)
		require.NoError(t, s.Observe(e.Event))
	}
	stored := 0
	for _, e := range got {
		if b, ok := e.Event.(pagemanager.BlockStored); ok {
			stored += len(b.Hashes)
		}
	}
	assert.Equal(t, 2, stored, "the first sequence registered its two full pages once")

	_, _, err = c.AllocPages(ctx, 1)
	require.ErrorIs(t, err, ErrInvalid)
	hbm, err := rt.NewCache("h", Spec{Paged: &PagedSpec{Metadata: poolSpec().Paged.Metadata, DType: tensor.Float32}})
	require.NoError(t, err)
	_, _, err = hbm.AddSequence(ctx, 1, pagemanager.Request{Tokens: prompt})
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "created with a Pool")
}
