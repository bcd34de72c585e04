package engine

import (
	"context"

	"github.com/asynkron/protoactor-go/eventstream"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// Backend is the cache runtime the engine serves through: the embedded
// runtime (Embedded, what Run uses) or a cluster (Clustered). The engine
// needs only this of it: caches, transactions, a paged cache's pool, and
// the event stream its pool publishes KV events on.
type Backend interface {
	// NewCache creates cache id.
	NewCache(id string, spec actors.Spec) (Cache, error)
	// EventStream carries the pools' actors.KVEvents.
	EventStream() *eventstream.EventStream
}

// Cache is what the engine uses of a cache (actors.Cache and
// cluster.Cache both have it).
type Cache interface {
	// Current returns the current version.
	Current(ctx context.Context) (actors.Version, error)
	// Begin opens a transaction on version base.
	Begin(ctx context.Context, base uint64) (Txn, error)
	// AddSequence admits a sequence to a paged cache's pool.
	AddSequence(ctx context.Context, seq pagemanager.SeqID, req pagemanager.Request) (pagemanager.Step, []int32, error)
	// AppendTokens extends a sequence in the pool.
	AppendTokens(ctx context.Context, seq pagemanager.SeqID, tokens []int32) (pagemanager.Step, []int32, error)
	// FreeSequence releases a sequence's pages.
	FreeSequence(ctx context.Context, seq pagemanager.SeqID) error
}

// Txn is what the engine uses of a transaction.
type Txn interface {
	// WriteLayer stages a write of one layer and returns its result,
	// with the staged view.
	WriteLayer(ctx context.Context, layer int, w actors.Write) (actors.Result, error)
	// Commit publishes the transaction's version.
	Commit(ctx context.Context) (uint64, error)
	// Abort drops the staged writes.
	Abort(ctx context.Context) error
}

// Embedded serves through an embedded runtime.
func Embedded(rt *actors.Runtime) Backend { return embedded{rt} }

type embedded struct{ rt *actors.Runtime }

func (b embedded) NewCache(id string, spec actors.Spec) (Cache, error) {
	c, err := b.rt.NewCache(id, spec)
	if err != nil {
		return nil, err
	}
	return embeddedCache{c}, nil
}

func (b embedded) EventStream() *eventstream.EventStream { return b.rt.System().EventStream }

type embeddedCache struct{ *actors.Cache }

func (c embeddedCache) Begin(ctx context.Context, base uint64) (Txn, error) {
	t, err := c.Cache.Begin(ctx, base)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Clustered serves through a clustered runtime: every layer is a grain on
// the cluster's members; the pool stays in this process.
func Clustered(rt *cluster.Runtime) Backend { return clustered{rt} }

type clustered struct{ rt *cluster.Runtime }

func (b clustered) NewCache(id string, spec actors.Spec) (Cache, error) {
	c, err := b.rt.NewCache(id, spec)
	if err != nil {
		return nil, err
	}
	return clusteredCache{c}, nil
}

func (b clustered) EventStream() *eventstream.EventStream { return b.rt.System().EventStream }

type clusteredCache struct{ *cluster.Cache }

func (c clusteredCache) Begin(ctx context.Context, base uint64) (Txn, error) {
	t, err := c.Cache.Begin(ctx, base)
	if err != nil {
		return nil, err
	}
	return t, nil
}
