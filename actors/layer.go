package actors

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/messages"
)

// applyLayer asks a layer actor to derive the layer's next view from base
// (the committed view of the round's base version) with write.
type applyLayer struct {
	round uint64
	layer int
	base  any
	write Write
}

// layerApplied is a layer actor's answer: the next view and the result, or
// a failure status. Nothing is committed by it.
type layerApplied struct {
	round  uint64
	layer  int
	next   any
	result Result
	status *messages.Status
}

// layerActor computes one layer's writes. It keeps no state between
// messages: the cache actor owns the committed versions and hands each
// round its base view, so a layer actor restarted after a panic has nothing
// to lose and nothing to restore.
type layerActor struct{}

func (layerActor) Receive(c actor.Context) {
	m, ok := c.Message().(*applyLayer)
	if !ok {
		return
	}
	next, res, err := m.write.apply(m.base)
	if err != nil {
		err = fmt.Errorf("layer %d: %w", m.layer, err)
	}
	c.Respond(&layerApplied{round: m.round, layer: m.layer, next: next, result: res, status: statusOf(err)})
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
