package cluster

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/actors/internal/meters"
	"github.com/kvmesh/kvmesh/messages"
)

// meteredGrain records each request its grain handles, and its activation
// and stop, on a member's meters.
type meteredGrain struct {
	set   *meters.Set
	kind  string
	inner actor.Actor
}

// metered wraps a grain when set is not nil.
func metered(set *meters.Set, kind string, inner actor.Actor) actor.Actor {
	if set == nil {
		return inner
	}
	return &meteredGrain{set: set, kind: kind, inner: inner}
}

func (g *meteredGrain) Receive(c actor.Context) {
	start := time.Now()
	g.inner.Receive(c)
	switch m := c.Message().(type) {
	case *actor.Started:
		g.set.GrainActive(g.kind, 1)
	case *actor.Stopped:
		g.set.GrainActive(g.kind, -1)
	default:
		if name := messageName(m); name != "" {
			g.set.Grain(g.kind, name, start)
		}
	}
}

// messageName is a grain request's metrics label ("" for other messages).
func messageName(m any) string {
	switch m := m.(type) {
	case *messages.GrainInit, *messages.PagesInit:
		return "init"
	case *messages.GrainWrite:
		return "write"
	case *messages.GrainPart:
		return "part"
	case *messages.GrainFetch:
		return "fetch"
	case *messages.GrainCommit:
		if m.Abort {
			return "abort"
		}
		return "commit"
	case *messages.GrainRead:
		return "read"
	case *messages.GrainClose:
		return "close"
	case *messages.AllocPages:
		return "alloc_pages"
	case *messages.AllocPrefillPages:
		return "alloc_prefill_pages"
	case *messages.FreePages:
		return "free_pages"
	}
	return ""
}
