package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// KVEvent is a page pool's KV event (pagemanager.BlockStored, BlockRemoved
// or AllBlocksCleared, each with its sequence number) as published on the
// actor system's event stream, tagged with the cache it comes from. Any
// subscriber can follow a cache's prefix cache with it and detect gaps
// (pagemanager.Subscriber).
type KVEvent struct {
	Cache string
	Event pagemanager.Event
}

// Requests to a pool page-manager actor and its reply.
type (
	poolAdd struct {
		seq pagemanager.SeqID
		req pagemanager.Request
	}
	poolAppend struct {
		seq    pagemanager.SeqID
		tokens []int32
	}
	poolFork  struct{ src, dst pagemanager.SeqID }
	poolFree  struct{ seq pagemanager.SeqID }
	poolReply struct {
		step   pagemanager.Step
		pages  []int32
		free   int // pages in the free queue after the operation
		status *messages.Status
	}
)

// poolActor owns a paged cache's Pool: it serialises every pool operation
// and publishes the pool's KV events on the event stream after each one.
type poolActor struct {
	id   string
	pool *pagemanager.Pool
}

func (a *poolActor) Receive(c actor.Context) {
	var (
		step pagemanager.Step
		seq  pagemanager.SeqID
		err  error
	)
	switch m := c.Message().(type) {
	case *poolAdd:
		seq = m.seq
		step, err = a.pool.Add(m.seq, m.req)
	case *poolAppend:
		seq = m.seq
		step, err = a.pool.Append(m.seq, m.tokens)
	case *poolFork:
		seq = m.dst
		err = a.pool.Fork(m.src, m.dst)
	case *poolFree:
		err = a.pool.Free(m.seq)
	default:
		return
	}
	for _, e := range a.pool.TakeEvents() {
		c.ActorSystem().EventStream.Publish(&KVEvent{Cache: a.id, Event: e})
	}
	reply := &poolReply{step: step, free: a.pool.NumFree()}
	if err != nil {
		reply.status = statusOf(errorf(err, "cache %s", a.id))
	} else {
		reply.status = statusOf(nil)
		if seq != 0 {
			reply.pages, _, _ = a.pool.BlockTable(seq)
		}
	}
	c.Respond(reply)
}

func (c *Cache) poolRequest(ctx context.Context, op string, msg any) (_ pagemanager.Step, _ []int32, err error) {
	defer c.observe(op, time.Now(), &err)
	res, err := c.request(ctx, c.pid, op, msg)
	if err != nil {
		return pagemanager.Step{}, nil, err
	}
	switch r := res.(type) {
	case *poolReply:
		if err := errorOf(r.status); err != nil {
			return r.step, r.pages, err
		}
		prompt := 0
		if add, ok := msg.(*poolAdd); ok {
			prompt = len(add.req.Tokens)
		}
		c.rt.meters.Pool(c.id, prompt, r.step.HitTokens, r.step.Evicted, r.free)
		return r.step, r.pages, nil
	case *pagesReply: // the cache has no pool
		return pagemanager.Step{}, nil, errorOf(r.status)
	}
	return pagemanager.Step{}, nil, errorf(ErrInternal, "cache %s: %s: unexpected reply %T", c.id, op, res)
}

// AddSequence admits a sequence to the cache's page pool (Pool.Add): it
// reuses the longest cached prefix and allocates the rest, all or nothing.
// It returns the step (hit tokens, new pages, copies) and the sequence's
// page table.
func (c *Cache) AddSequence(ctx context.Context, seq pagemanager.SeqID, req pagemanager.Request) (pagemanager.Step, []int32, error) {
	return c.poolRequest(ctx, "add sequence", &poolAdd{seq: seq, req: req})
}

// AppendTokens extends a sequence (Pool.Append); a write into a page shared
// by a fork comes back as a copy in the step, for the cache to apply.
func (c *Cache) AppendTokens(ctx context.Context, seq pagemanager.SeqID, tokens []int32) (pagemanager.Step, []int32, error) {
	return c.poolRequest(ctx, "append tokens", &poolAppend{seq: seq, tokens: tokens})
}

// ForkSequence makes dst share src's pages (Pool.Fork).
func (c *Cache) ForkSequence(ctx context.Context, src, dst pagemanager.SeqID) ([]int32, error) {
	_, pages, err := c.poolRequest(ctx, "fork sequence", &poolFork{src: src, dst: dst})
	return pages, err
}

// FreeSequence releases a sequence's pages (Pool.Free); cached pages stay
// in the prefix cache until evicted.
func (c *Cache) FreeSequence(ctx context.Context, seq pagemanager.SeqID) error {
	_, _, err := c.poolRequest(ctx, "free sequence", &poolFree{seq: seq})
	return err
}
