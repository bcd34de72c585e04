package actors

import (
	"fmt"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// Version is a published, immutable version of a cache: its number and one
// view per layer (transformer.View, paged.View, mamba.View, mamba2.View or
// lightning.View; a *Sharded of them for a sharded cache, see Layer).
// Readers holding a Version see the same data forever.
type Version struct {
	Number uint64
	Views  []any
}

// clone returns v with its own Views slice, so a reader that assigns to it
// cannot change the cache's history (the views themselves are immutable).
func (v Version) clone() Version {
	v.Views = append([]any(nil), v.Views...)
	return v
}

// LayerWrite is one layer's write of a step.
type LayerWrite struct {
	Layer int
	Write Write
}

// Requests to a cache actor and its replies. In-process they carry Go
// values by reference; every reply carries a status, never a Go error.
type (
	stepRequest struct {
		base   uint64
		writes []LayerWrite
		txn    string // set by a transaction's WriteLayer: the write is staged, not committed
	}
	stepReply struct {
		version uint64
		results []Result
		status  *messages.Status
	}
	beginRequest struct{ base uint64 }
	beginReply   struct {
		txn    string
		status *messages.Status
	}
	commitRequest struct{ txn string }
	abortRequest  struct{ txn string }
	versionReply  struct {
		version Version
		status  *messages.Status
	}
	snapshotRequest struct {
		number uint64
		latest bool
	}
	roundTimeout struct{ round uint64 }
)

// round is a step (or a transaction's layer write) in flight: the replies
// still expected from layer actors.
type round struct {
	replyTo   *actor.PID
	base      uint64
	txn       string
	layers    []int // in request order
	next      map[int]any
	results   map[int]Result
	remaining int
	failed    *messages.Status
	timer     *time.Timer // ends the round if a layer never answers
}

// txn is an open transaction: the layers written so far, staged on base.
type txn struct {
	base  uint64
	views map[int]any
}

// cacheActor owns a cache's committed versions: it fans each step out to
// its layer actors, gathers their views and publishes the next version
// atomically, or fails the step as a whole and leaves the current version
// current.
type cacheActor struct {
	id        string
	cfg       config
	parentPID *actor.PID // for the layer supervisor, set on Started
	layers    []*actor.PID
	current   Version
	history   []Version // the last cfg.history versions, oldest first
	rounds    map[uint64]*round
	nextRound uint64
	txns      map[string]*txn
	nextTxn   uint64
	pm        *pagemanager.HBMPageManager // paged caches: owned by the page-manager child
	pool      *pagemanager.Pool           // or, when the spec asks for one, a page pool
	pages     *actor.PID
}

func (a *cacheActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		a.parentPID = c.Self()
		a.layers = make([]*actor.PID, len(a.current.Views))
		for l := range a.layers {
			a.layers[l] = c.Spawn(actor.PropsFromProducer(func() actor.Actor { return newLayerActor(a.id, l) }))
		}
		switch {
		case a.pool != nil:
			a.pages = c.Spawn(actor.PropsFromProducer(func() actor.Actor { return &poolActor{id: a.id, pool: a.pool} }))
		case a.pm != nil:
			a.pages = c.Spawn(actor.PropsFromProducer(func() actor.Actor { return &pageActor{id: a.id, pm: a.pm} }))
		}
	case *allocPages, *allocPrefill, *freePages:
		if a.pm == nil {
			c.Respond(&pagesReply{status: statusOf(errorf(ErrInvalid, "cache %s: only a paged cache with an HBMPageManager (no Pool) allocates pages this way", a.id))})
			return
		}
		c.Forward(a.pages) // the sender stays the requester
	case *poolAdd, *poolAppend, *poolFork, *poolFree:
		if a.pool == nil {
			c.Respond(&poolReply{status: statusOf(errorf(ErrInvalid, "cache %s: only a paged cache created with a Pool has sequences", a.id))})
			return
		}
		c.Forward(a.pages)
	case *stepRequest:
		a.step(c, m)
	case *layerApplied:
		a.applied(c, m)
	case *layerFailed:
		if req, ok := actor.UnwrapEnvelopeMessage(m.message).(*applyLayer); ok {
			a.fail(c, req.round, errorf(ErrInternal, "cache %s: layer %d panicked: %v; version %d is still current", a.id, req.layer, m.reason, a.current.Number))
		}
	case *roundTimeout:
		a.fail(c, m.round, errorf(ErrTimeout, "cache %s: a layer did not answer within %v", a.id, a.cfg.timeout))
	case *beginRequest:
		a.begin(c, m)
	case *commitRequest:
		a.commit(c, m)
	case *abortRequest:
		_, ok := a.txns[m.txn]
		delete(a.txns, m.txn)
		if !ok {
			c.Respond(&versionReply{status: statusOf(errorf(ErrNotFound, "cache %s: no transaction %q", a.id, m.txn))})
			return
		}
		c.Respond(&versionReply{version: a.current.clone(), status: statusOf(nil)})
	case *snapshotRequest:
		c.Respond(a.snapshot(m))
	}
}

func (a *cacheActor) step(c actor.Context, m *stepRequest) {
	reject := func(err error) { c.Respond(&stepReply{version: a.current.Number, status: statusOf(err)}) }
	if len(a.rounds) >= a.cfg.maxInFlight {
		reject(errorf(ErrBusy, "cache %s: %d steps in flight (limit %d)", a.id, len(a.rounds), a.cfg.maxInFlight))
		return
	}
	if len(m.writes) == 0 {
		reject(errorf(ErrInvalid, "cache %s: a step with no writes", a.id))
		return
	}
	base := a.current
	if m.txn != "" {
		t, ok := a.txns[m.txn]
		if !ok {
			reject(errorf(ErrNotFound, "cache %s: no transaction %q", a.id, m.txn))
			return
		}
		if m.base = t.base; t.base != a.current.Number {
			reject(errorf(ErrStale, "cache %s: transaction %s is based on version %d, the current version is %d", a.id, m.txn, t.base, a.current.Number))
			return
		}
	} else if m.base != a.current.Number {
		reject(errorf(ErrStale, "cache %s: step based on version %d, the current version is %d", a.id, m.base, a.current.Number))
		return
	}
	seen := map[int]bool{}
	for _, w := range m.writes {
		if w.Layer < 0 || w.Layer >= len(a.layers) {
			reject(errorf(ErrInvalid, "cache %s: layer %d out of range (the cache has %d layers)", a.id, w.Layer, len(a.layers)))
			return
		}
		if seen[w.Layer] {
			reject(errorf(ErrInvalid, "cache %s: layer %d written twice in one step", a.id, w.Layer))
			return
		}
		if w.Write == nil {
			reject(errorf(ErrInvalid, "cache %s: layer %d has a nil write", a.id, w.Layer))
			return
		}
		seen[w.Layer] = true
	}
	a.nextRound++
	r := &round{replyTo: c.Sender(), base: m.base, txn: m.txn, next: map[int]any{}, results: map[int]Result{}, remaining: len(m.writes)}
	a.rounds[a.nextRound] = r
	for _, w := range m.writes {
		view := base.Views[w.Layer]
		if m.txn != "" {
			if staged, ok := a.txns[m.txn].views[w.Layer]; ok {
				view = staged // a transaction may write a layer again
			}
		}
		r.layers = append(r.layers, w.Layer)
		c.Request(a.layers[w.Layer], &applyLayer{round: a.nextRound, layer: w.Layer, base: view, write: w.Write})
	}
	id, self, sys := a.nextRound, c.Self(), c.ActorSystem()
	r.timer = time.AfterFunc(a.cfg.timeout, func() { sys.Root.Send(self, &roundTimeout{round: id}) })
}

func (a *cacheActor) applied(c actor.Context, m *layerApplied) {
	r, ok := a.rounds[m.round]
	if !ok {
		return // the round already failed or timed out
	}
	if m.status.Code != messages.Code_CODE_OK && r.failed == nil {
		r.failed = m.status
	}
	r.next[m.layer], r.results[m.layer] = m.next, m.result
	if r.remaining--; r.remaining > 0 {
		return
	}
	delete(a.rounds, m.round)
	r.timer.Stop()
	reply := &stepReply{version: a.current.Number}
	switch {
	case r.failed != nil:
		reply.status = r.failed
	case r.txn != "":
		t, ok := a.txns[r.txn]
		if !ok {
			reply.status = statusOf(errorf(ErrNotFound, "cache %s: transaction %q ended while a write was in flight", a.id, r.txn))
			break
		}
		for l, v := range r.next {
			t.views[l] = v
		}
		reply.status = statusOf(nil)
	case r.base != a.current.Number:
		reply.status = statusOf(errorf(ErrStale, "cache %s: step based on version %d, but version %d was published first", a.id, r.base, a.current.Number))
	default:
		a.publish(r.next)
		reply.version, reply.status = a.current.Number, statusOf(nil)
	}
	if reply.status.Code == messages.Code_CODE_OK {
		for _, l := range r.layers {
			reply.results = append(reply.results, r.results[l])
		}
	}
	c.Send(r.replyTo, reply)
}

// publish makes the next version current: the current views with the
// written layers replaced. It is one assignment in the actor's goroutine, so
// a reader sees the old or the new version, never a mix.
func (a *cacheActor) publish(next map[int]any) {
	views := append([]any(nil), a.current.Views...)
	for l, v := range next {
		views[l] = v
	}
	a.current = Version{Number: a.current.Number + 1, Views: views}
	a.history = append(a.history, a.current)
	if len(a.history) > a.cfg.history {
		a.history = a.history[len(a.history)-a.cfg.history:]
	}
}

// fail ends a round in flight with err; late replies are ignored.
func (a *cacheActor) fail(c actor.Context, id uint64, err error) {
	r, ok := a.rounds[id]
	if !ok {
		return
	}
	delete(a.rounds, id)
	r.timer.Stop()
	c.Send(r.replyTo, &stepReply{version: a.current.Number, status: statusOf(err)})
}

func (a *cacheActor) begin(c actor.Context, m *beginRequest) {
	if m.base != a.current.Number {
		c.Respond(&beginReply{status: statusOf(errorf(ErrStale, "cache %s: begin on version %d, the current version is %d", a.id, m.base, a.current.Number))})
		return
	}
	a.nextTxn++
	id := fmt.Sprintf("%s/txn/%d", a.id, a.nextTxn)
	a.txns[id] = &txn{base: m.base, views: map[int]any{}}
	c.Respond(&beginReply{txn: id, status: statusOf(nil)})
}

func (a *cacheActor) commit(c actor.Context, m *commitRequest) {
	t, ok := a.txns[m.txn]
	delete(a.txns, m.txn)
	switch {
	case !ok:
		c.Respond(&versionReply{status: statusOf(errorf(ErrNotFound, "cache %s: no transaction %q", a.id, m.txn))})
	case t.base != a.current.Number:
		c.Respond(&versionReply{version: a.current.clone(), status: statusOf(errorf(ErrStale, "cache %s: transaction %s is based on version %d, the current version is %d", a.id, m.txn, t.base, a.current.Number))})
	default:
		a.publish(t.views)
		c.Respond(&versionReply{version: a.current.clone(), status: statusOf(nil)})
	}
}

func (a *cacheActor) snapshot(m *snapshotRequest) *versionReply {
	if m.latest || m.number == a.current.Number {
		return &versionReply{version: a.current.clone(), status: statusOf(nil)}
	}
	i := sort.Search(len(a.history), func(i int) bool { return a.history[i].Number >= m.number })
	if i < len(a.history) && a.history[i].Number == m.number {
		return &versionReply{version: a.history[i].clone(), status: statusOf(nil)}
	}
	oldest := a.current.Number
	if len(a.history) > 0 {
		oldest = a.history[0].Number
	}
	return &versionReply{status: statusOf(errorf(ErrNotFound, "cache %s: version %d is not kept (versions %d..%d are)", a.id, m.number, oldest, a.current.Number))}
}
