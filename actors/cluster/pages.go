package cluster

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// pageGrain is a paged cache's page manager as a grain (identity
// cache/<id>/pages): EasyDeL's HBMPageManager, serialised by the grain's
// mailbox. Like a shard grain it draws an epoch when it activates, and a
// request naming another epoch (its member was lost, so the allocation
// state is gone) gets CODE_STATE_LOST instead of pages that may be in use.
type pageGrain struct {
	epoch   uint64
	cacheID string
	pm      *pagemanager.HBMPageManager
}

func newPageGrain() *pageGrain { return &pageGrain{epoch: newShardGrain().epoch} }

func (g *pageGrain) check(cacheID string, epoch uint64) error {
	if g.pm == nil || epoch != g.epoch || cacheID != g.cacheID {
		return fmt.Errorf("%w: cache %s: page manager has epoch %d, request names epoch %d (the grain re-activated empty; its page allocations are gone)", ErrStateLost, cacheID, g.epoch, epoch)
	}
	return nil
}

func (g *pageGrain) Receive(c actor.Context) {
	var pages []int32
	var err error
	switch m := c.Message().(type) {
	case *messages.PagesInit:
		md := m.GetMetadata()
		meta := paged.Metadata{BatchSize: int(md.GetBatchSize()), NumHiddenLayers: int(md.GetNumHiddenLayers()), NumPagesPerLayer: int(md.GetNumPagesPerLayer()),
			NumPagesPerSequence: int(md.GetNumPagesPerSequence()), MaxSequences: int(md.GetMaxSequences()), PageSize: int(md.GetPageSize()),
			NumKVHeads: int(md.GetNumKvHeads()), KVHeadDimSize: int(md.GetKvHeadDimSize()), HBMUtilization: md.GetHbmUtilization()}
		var pm *pagemanager.HBMPageManager
		if pm, err = pagemanager.NewHBMPageManager(pagemanager.ConfigFromMetadata(meta)); err == nil {
			g.cacheID, g.pm = m.CacheId, pm
		}
	case *messages.AllocPages:
		if err = g.check(m.CacheId, m.Epoch); err == nil {
			pages, err = g.pm.AllocHBMPages(int(m.Count))
		}
	case *messages.AllocPrefillPages:
		if err = g.check(m.CacheId, m.Epoch); err == nil {
			pages, err = g.pm.AllocPrefillHBMPages(int(m.PromptLen))
		}
	case *messages.FreePages:
		if err = g.check(m.CacheId, m.Epoch); err == nil {
			err = g.pm.FreeHBMPages(m.Pages)
		}
	default:
		return
	}
	rep := &messages.PagesReply{Status: &messages.Status{Code: messages.Code_CODE_OK}, Pages: pages, Epoch: g.epoch}
	if err != nil {
		rep.Status = statusOf(err)
		if rep.Status.Code == messages.Code_CODE_INVALID_ARGUMENT {
			// the allocator's own errors keep their wire codes
			rep.Status = pagesStatus(err)
		}
	}
	if g.pm != nil {
		rep.Free = uint32(g.pm.NumFree())
	}
	c.Respond(rep)
}

func pagesStatus(err error) *messages.Status {
	code := messages.Code_CODE_INVALID_ARGUMENT
	if isNoFreePages(err) {
		code = messages.Code_CODE_NO_FREE_PAGES
	} else if isOutOfRange(err) {
		code = messages.Code_CODE_OUT_OF_RANGE
	}
	return &messages.Status{Code: code, Message: err.Error()}
}

// PageIdentity returns the page-manager grain identity of cache id.
func PageIdentity(id string) string { return "cache/" + id + "/pages" }

// PageManager is a handle on a clustered paged cache's page manager.
type PageManager struct {
	rt    *Runtime
	id    string
	epoch uint64
}

// NewPageManager creates (or re-creates) cache id's page manager for meta
// on its grain.
func (r *Runtime) NewPageManager(ctx context.Context, id string, meta paged.Metadata) (*PageManager, error) {
	md := &messages.PagedMetadata{BatchSize: int64(meta.BatchSize), NumHiddenLayers: int64(meta.NumHiddenLayers), NumPagesPerLayer: int64(meta.NumPagesPerLayer),
		NumPagesPerSequence: int64(meta.NumPagesPerSequence), MaxSequences: int64(meta.MaxSequences), PageSize: int64(meta.PageSize),
		NumKvHeads: int64(meta.NumKVHeads), KvHeadDimSize: int64(meta.KVHeadDimSize), HbmUtilization: meta.HBMUtilization}
	p := &PageManager{rt: r, id: id}
	rep, err := p.call(ctx, &messages.PagesInit{CacheId: id, Metadata: md})
	if err != nil {
		return nil, fmt.Errorf("create page manager of cache %s: %w", id, err)
	}
	p.epoch = rep.Epoch
	return p, nil
}

func (p *PageManager) call(ctx context.Context, msg any) (*messages.PagesReply, error) {
	res, err := p.rt.callKind(ctx, PageIdentity(p.id), PageKind, msg)
	if err != nil {
		return nil, err
	}
	rep, ok := res.(*messages.PagesReply)
	if !ok {
		return nil, fmt.Errorf("%w: %s: reply %T", ErrUnreachable, PageIdentity(p.id), res)
	}
	switch rep.Status.GetCode() {
	case messages.Code_CODE_OK:
		return rep, nil
	case messages.Code_CODE_STATE_LOST:
		return nil, fmt.Errorf("%w: %s", ErrStateLost, rep.Status.Message)
	}
	return nil, statusError(rep.Status)
}

// AllocPages allocates n pages, all or nothing; it returns them and the
// number left free.
func (p *PageManager) AllocPages(ctx context.Context, n int) ([]int32, int, error) {
	rep, err := p.call(ctx, &messages.AllocPages{CacheId: p.id, Count: uint32(n), Epoch: p.epoch})
	if err != nil {
		return nil, 0, err
	}
	return rep.Pages, int(rep.Free), nil
}

// AllocPrefillPages allocates the pages a prompt of promptLen tokens needs.
func (p *PageManager) AllocPrefillPages(ctx context.Context, promptLen int) ([]int32, int, error) {
	rep, err := p.call(ctx, &messages.AllocPrefillPages{CacheId: p.id, PromptLen: uint32(promptLen), Epoch: p.epoch})
	if err != nil {
		return nil, 0, err
	}
	return rep.Pages, int(rep.Free), nil
}

// FreePages returns pages to the free list; it returns the number free.
func (p *PageManager) FreePages(ctx context.Context, pages []int32) (int, error) {
	rep, err := p.call(ctx, &messages.FreePages{CacheId: p.id, Pages: pages, Epoch: p.epoch})
	if err != nil {
		return 0, err
	}
	return int(rep.Free), nil
}
