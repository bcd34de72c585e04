package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/internal/meters"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// localPool is a clustered paged cache's page pool: a pagemanager.Pool in
// the coordinating process (the scheduler keeps the page table and the
// prefix cache, as vLLM's does; the members keep the KV), serialised by a
// mutex, its KV events published on the runtime's event stream after
// every operation, as the embedded runtime's pool actor does.
type localPool struct {
	id     string
	sys    *actor.ActorSystem
	meters *meters.Set
	mu     sync.Mutex
	p      *pagemanager.Pool
}

func newLocalPool(id string, spec actors.PagedSpec, sys *actor.ActorSystem, set *meters.Set) (*localPool, error) {
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
	return &localPool{id: id, sys: sys, meters: set, p: p}, nil
}

// do runs op on the pool, publishes its events and returns seq's page
// table (seq 0: none).
func (lp *localPool) do(seq pagemanager.SeqID, prompt int, op func(*pagemanager.Pool) (pagemanager.Step, error)) (pagemanager.Step, []int32, error) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	step, err := op(lp.p)
	for _, e := range lp.p.TakeEvents() {
		lp.sys.EventStream.Publish(&actors.KVEvent{Cache: lp.id, Event: e})
	}
	if err != nil {
		return step, nil, fmt.Errorf("cache %s: %w", lp.id, err)
	}
	lp.meters.Pool(lp.id, prompt, step.HitTokens, step.Evicted, lp.p.NumFree())
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
func (c *Cache) AddSequence(ctx context.Context, seq pagemanager.SeqID, req pagemanager.Request) (_ pagemanager.Step, _ []int32, err error) {
	defer c.observe("add_sequence", time.Now(), &err)
	if err := c.withPool(ctx, "add sequence"); err != nil {
		return pagemanager.Step{}, nil, err
	}
	return c.pool.do(seq, len(req.Tokens), func(p *pagemanager.Pool) (pagemanager.Step, error) { return p.Add(seq, req) })
}

// AppendTokens extends a sequence (Pool.Append).
func (c *Cache) AppendTokens(ctx context.Context, seq pagemanager.SeqID, tokens []int32) (_ pagemanager.Step, _ []int32, err error) {
	defer c.observe("append_tokens", time.Now(), &err)
	if err := c.withPool(ctx, "append tokens"); err != nil {
		return pagemanager.Step{}, nil, err
	}
	return c.pool.do(seq, 0, func(p *pagemanager.Pool) (pagemanager.Step, error) { return p.Append(seq, tokens) })
}

// ForkSequence makes dst share src's pages (Pool.Fork).
func (c *Cache) ForkSequence(ctx context.Context, src, dst pagemanager.SeqID) (_ []int32, err error) {
	defer c.observe("fork_sequence", time.Now(), &err)
	if err := c.withPool(ctx, "fork sequence"); err != nil {
		return nil, err
	}
	_, pages, err := c.pool.do(dst, 0, func(p *pagemanager.Pool) (pagemanager.Step, error) { return pagemanager.Step{}, p.Fork(src, dst) })
	return pages, err
}

// FreeSequence releases a sequence's pages (Pool.Free).
func (c *Cache) FreeSequence(ctx context.Context, seq pagemanager.SeqID) (err error) {
	defer c.observe("free_sequence", time.Now(), &err)
	if err := c.withPool(ctx, "free sequence"); err != nil {
		return err
	}
	_, _, err = c.pool.do(0, 0, func(p *pagemanager.Pool) (pagemanager.Step, error) { return pagemanager.Step{}, p.Free(seq) })
	return err
}
