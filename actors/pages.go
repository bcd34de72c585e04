package actors

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// Requests to a page-manager actor and its reply.
type (
	allocPages   struct{ n int }
	allocPrefill struct{ promptLen int }
	freePages    struct{ pages []int32 }
	pagesReply   struct {
		pages  []int32
		free   int
		status *messages.Status
	}
)

// pageActor owns a paged cache's page manager: it serialises allocation, so
// concurrent requests never see a half-done one.
type pageActor struct {
	id string
	pm *pagemanager.HBMPageManager
}

func (a *pageActor) Receive(c actor.Context) {
	var pages []int32
	var err error
	switch m := c.Message().(type) {
	case *allocPages:
		pages, err = a.pm.AllocHBMPages(m.n)
	case *allocPrefill:
		pages, err = a.pm.AllocPrefillHBMPages(m.promptLen)
	case *freePages:
		err = a.pm.FreeHBMPages(m.pages)
	default:
		return
	}
	if err != nil {
		err = errorf(err, "cache %s", a.id)
	}
	c.Respond(&pagesReply{pages: pages, free: a.pm.NumFree(), status: statusOf(err)})
}

func (c *Cache) pagesRequest(ctx context.Context, op string, msg any) (_ []int32, _ int, err error) {
	defer c.observe(op, time.Now(), &err)
	res, err := c.request(ctx, c.pid, op, msg) // the cache actor forwards it to its page-manager child
	if err != nil {
		return nil, 0, err
	}
	r := res.(*pagesReply)
	return r.pages, r.free, errorOf(r.status)
}

// AllocPages allocates n pages, all or nothing (HBMPageManager.AllocHBMPages).
// It returns the pages and the number left free.
func (c *Cache) AllocPages(ctx context.Context, n int) ([]int32, int, error) {
	return c.pagesRequest(ctx, "alloc pages", &allocPages{n: n})
}

// AllocPrefillPages allocates the pages a prompt of promptLen tokens needs.
func (c *Cache) AllocPrefillPages(ctx context.Context, promptLen int) ([]int32, int, error) {
	return c.pagesRequest(ctx, "alloc prefill pages", &allocPrefill{promptLen: promptLen})
}

// FreePages returns pages to the free list; it returns the number free.
func (c *Cache) FreePages(ctx context.Context, pages []int32) (int, error) {
	_, free, err := c.pagesRequest(ctx, "free pages", &freePages{pages: pages})
	return free, err
}
