package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/messages"
)

// applyLayer asks a layer actor to derive the layer's next view from base
// (the committed view of the round's base version, or a transaction's
// staged view) with write. base is a view, or a *Sharded for a sharded
// cache.
type applyLayer struct {
	round uint64
	layer int
	base  any
	write Write
}

// layerApplied is a layer actor's answer: the next view (a *Sharded for a
// sharded layer) and the result, or a failure status. Nothing is committed
// by it.
type layerApplied struct {
	round  uint64
	layer  int
	next   any
	result Result
	status *messages.Status
}

// applyShard asks a shard actor to apply one device's part of a layer
// write to that device's part view.
type applyShard struct {
	round  uint64
	layer  int
	device int
	base   any
	write  Write
}

// shardApplied is a shard actor's answer: the device's next part view and
// result, or a failure status.
type shardApplied struct {
	round  uint64
	device int
	next   any
	result Result
	status *messages.Status
}

// shardRound is a sharded layer write in flight: the part replies still
// expected from the shard actors.
type shardRound struct {
	replyTo   *actor.PID
	base      *Sharded
	parts     []any
	results   []Result
	remaining int
}

// layerActor computes one layer's writes. It holds no committed data: the
// cache actor owns the committed versions and hands each round its base
// view, so a layer actor restarted after a panic has nothing to lose and
// nothing to restore.
//
// For a sharded layer (base is a *Sharded) it cuts the write per device
// (Write.split), sends each part to the shard actor of that device (its
// children, spawned on the first sharded write) and counts the replies per
// round in its own state, never blocking on a future in Receive; when all
// devices have answered it replies with the next *Sharded. It is the
// supervisor of its shard actors: a shard that panics is restarted (shard
// actors are stateless too) and the round it was working on fails at once
// with ErrInternal naming the layer and the device.
type layerActor struct {
	cache  string
	layer  int
	shards []*actor.PID           // one per device, in device order
	rounds map[uint64]*shardRound // sharded writes in flight, by the cache actor's round id
}

func newLayerActor(cache string, layer int) *layerActor {
	return &layerActor{cache: cache, layer: layer, rounds: map[uint64]*shardRound{}}
}

func (a *layerActor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *applyLayer:
		if base, ok := m.base.(*Sharded); ok {
			a.fanOut(c, m, base)
			return
		}
		next, res, err := m.write.apply(m.base)
		if err != nil {
			err = fmt.Errorf("layer %d: %w", m.layer, err)
		}
		res.View = next
		c.Respond(&layerApplied{round: m.round, layer: m.layer, next: next, result: res, status: statusOf(err)})
	case *shardApplied:
		a.gather(c, m)
	case *actor.Restarting:
		// This incarnation panicked; its rounds in flight die with it (its
		// shard actors are being stopped): fail them now rather than let the
		// cache actor wait for its timeout.
		for id := range a.rounds {
			a.fail(c, id, errorf(ErrInternal, "cache %s: layer %d: the layer actor restarted while the write was in flight", a.cache, a.layer))
		}
	}
}

// fanOut splits a sharded layer write and sends each device its part.
func (a *layerActor) fanOut(c actor.Context, m *applyLayer, base *Sharded) {
	n := len(base.parts)
	writes, err := m.write.split(base)
	if err == nil && len(writes) != n {
		err = errorf(ErrInternal, "a write split into %d parts for %d devices", len(writes), n)
	}
	if err != nil {
		c.Respond(&layerApplied{round: m.round, layer: m.layer, status: statusOf(fmt.Errorf("layer %d: %w", m.layer, err))})
		return
	}
	if len(a.shards) != n {
		props := actor.PropsFromProducer(func() actor.Actor { return shardActor{} })
		a.shards = make([]*actor.PID, n)
		for i := range a.shards {
			a.shards[i] = c.SpawnPrefix(props, fmt.Sprintf("device%d-", i))
		}
	}
	a.rounds[m.round] = &shardRound{replyTo: c.Sender(), base: base, parts: make([]any, n), results: make([]Result, n), remaining: n}
	for i, w := range writes {
		c.Request(a.shards[i], &applyShard{round: m.round, layer: a.layer, device: i, base: base.parts[i], write: w})
	}
}

// gather counts a shard's reply; the last one completes the round, and a
// failure fails it at once (later replies of that round are ignored).
func (a *layerActor) gather(c actor.Context, m *shardApplied) {
	r, ok := a.rounds[m.round]
	if !ok {
		return // the round already failed
	}
	if m.status.Code != messages.Code_CODE_OK {
		delete(a.rounds, m.round)
		c.Send(r.replyTo, &layerApplied{round: m.round, layer: a.layer, status: m.status})
		return
	}
	r.parts[m.device], r.results[m.device] = m.next, m.result
	if r.remaining--; r.remaining > 0 {
		return
	}
	delete(a.rounds, m.round)
	next := r.base.with(r.parts)
	c.Send(r.replyTo, &layerApplied{round: m.round, layer: a.layer, next: next, result: Result{Parts: r.results, View: next}, status: statusOf(nil)})
}

// fail ends a sharded round in flight with err.
func (a *layerActor) fail(sender actor.SenderContext, id uint64, err error) {
	r, ok := a.rounds[id]
	if !ok {
		return
	}
	delete(a.rounds, id)
	sender.Send(r.replyTo, &layerApplied{round: id, layer: a.layer, status: statusOf(err)})
}

// HandleFailure makes the layer actor the supervisor of its shard actors
// (protoactor uses an actor's own SupervisorStrategy for its children). It
// runs in the layer actor's mailbox, like Receive, so it may touch its
// state: the failed shard is restarted and its round fails at once.
func (a *layerActor) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, message any) {
	sup.RestartChildren(child)
	if m, ok := actor.UnwrapEnvelopeMessage(message).(*applyShard); ok {
		a.fail(sys.Root, m.round, errorf(ErrInternal, "cache %s: layer %d: the shard actor of device %d panicked: %v; the step is not committed", a.cache, a.layer, m.device, reason))
	}
}

// shardActor applies one device's part of a layer write to that device's
// part view. It keeps no state between messages: the layer actor hands it
// the part view of the round's base, so a restart loses nothing.
type shardActor struct{}

func (shardActor) Receive(c actor.Context) {
	m, ok := c.Message().(*applyShard)
	if !ok {
		return
	}
	next, res, err := m.write.apply(m.base)
	if err != nil {
		err = fmt.Errorf("layer %d, device %d: %w", m.layer, m.device, err)
	}
	c.Respond(&shardApplied{round: m.round, device: m.device, next: next, result: res, status: statusOf(err)})
}

// layerFailed tells the cache actor that a layer actor panicked while
// handling message; the supervisor has restarted it.
type layerFailed struct {
	child   *actor.PID
	reason  any
	message any
}

// restartAndReport is the cache actor's strategy for its layer actors:
// restart a failed child (it has no state to lose) and tell the cache
// actor, so the round in flight fails at once instead of timing out.
type restartAndReport struct {
	parent **actor.PID // set when the cache actor starts
}

func (s restartAndReport) HandleFailure(sys *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, message any) {
	sup.RestartChildren(child)
	if *s.parent != nil {
		sys.Root.Send(*s.parent, &layerFailed{child: child, reason: reason, message: message})
	}
}
