package cluster

import (
	"context"
	"fmt"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// localPool is a clustered paged cache's page pool: a pagemanager.Pool in
// the coordinating process (the scheduler keeps the page table and the
// prefix cache, as vLLM's does; the members keep the KV), serialised by a
// mutex, its KV events published on the runtime's event stream after
// every operation, as the embedded runtime's pool actor does.
type localPool struct {
	id  string
	sys *actor.ActorSystem
	mu  sync.Mutex
	p   *pagemanager.Pool
}

func newLocalPool(id string, spec actors.PagedSpec, sys *actor.ActorSystem) (*localPool, error) {
	cfg := *spec.Pool
	if cfg.NumPages == 0 {
		cfg.NumPages = spec.Metadata.NumPagesPerLayer
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = spec.Metadata.PageSize
	}
	p, err := pagemanager.NewPool(cfg)
	if err != nil {
		return nil, err
	}
	return &localPool{id: id, sys: sys, p: p}, nil
}

// do runs op on the pool, publishes its events and returns seq's page
// table (seq 0: none).
func (lp *localPool) do(seq pagemanager.SeqID, op func(*pagemanager.Pool) (pagemanager.Step, error)) (pagemanager.Step, []int32, error) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	step, err := op(lp.p)
	for _, e := range lp.p.TakeEvents() {
		lp.sys.EventStream.Publish(&actors.KVEvent{Cache: lp.id, Event: e})
	}
	if err != nil {
		return step, nil, fmt.Errorf("cache %s: %w", lp.id, err)
	}
	var pages []int32
	if seq != 0 {
		pages, _, _ = lp.p.BlockTable(seq)
	}
	return step, pages, nil
}

func (c *Cache) withPool(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("cache %s: %s: %w", c.id, op, err)
	}
	if c.pool == nil {
		return fmt.Errorf("%w: cache %s: %s: only a paged cache created with a Pool has sequences", ErrInvalid, c.id, op)
	}
	return nil
}

// AddSequence admits a sequence to the cache's page pool (Pool.Add), as
// the embedded runtime's Cache.AddSequence does.
func (c *Cache) AddSequence(ctx context.Context, seq pagemanager.SeqID, req pagemanager.Request) (pagemanager.Step, []int32, error) {
	if err := c.withPool(ctx, "add sequence"); err != nil {
		return pagemanager.Step{}, nil, err
	}
	return c.pool.do(seq, func(p *pagemanager.Pool) (pagemanager.Step, error) { return p.Add(seq, req) })
}

// AppendTokens extends a sequence (Pool.Append).
func (c *Cache) AppendTokens(ctx context.Context, seq pagemanager.SeqID, tokens []int32) (pagemanager.Step, []int32, error) {
	if err := c.withPool(ctx, "append tokens"); err != nil {
		return pagemanager.Step{}, nil, err
	}
	return c.pool.do(seq, func(p *pagemanager.Pool) (pagemanager.Step, error) { return p.Append(seq, tokens) })
}

// ForkSequence makes dst share src's pages (Pool.Fork).
func (c *Cache) ForkSequence(ctx context.Context, src, dst pagemanager.SeqID) ([]int32, error) {
	if err := c.withPool(ctx, "fork sequence"); err != nil {
		return nil, err
	}
	_, pages, err := c.pool.do(dst, func(p *pagemanager.Pool) (pagemanager.Step, error) { return pagemanager.Step{}, p.Fork(src, dst) })
	return pages, err
}

// FreeSequence releases a sequence's pages (Pool.Free).
func (c *Cache) FreeSequence(ctx context.Context, seq pagemanager.SeqID) error {
	if err := c.withPool(ctx, "free sequence"); err != nil {
		return err
	}
	_, _, err := c.pool.do(0, func(p *pagemanager.Pool) (pagemanager.Step, error) { return pagemanager.Step{}, p.Free(seq) })
	return err
}
