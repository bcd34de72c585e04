package cluster

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// shardGrain holds one layer shard of one cache: its committed view, the
// one before it (so a reader of the previous version during a commit
// still reads it), and a staged view. It draws a random epoch when it
// activates: after its member dies, the grain re-activates elsewhere
// empty, with another epoch, and every request naming the old epoch gets
// CODE_STATE_LOST instead of zeros.
type shardGrain struct {
	epoch   uint64
	cacheID string
	layer   int
	init    bool

	version   uint64
	view      mamba.View
	prev      mamba.View
	hasPrev   bool
	staged    *mamba.View
	stagedVer uint64
}

func newShardGrain() *shardGrain {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &shardGrain{epoch: binary.LittleEndian.Uint64(b[:]) | 1}
}

func (g *shardGrain) reply(c actor.Context, err error, view []byte) {
	st := &messages.Status{Code: messages.Code_CODE_OK}
	if err != nil {
		st = statusOf(err)
	}
	c.Respond(&messages.GrainReply{Status: st, Epoch: g.epoch, Version: g.version, View: view})
}

// check answers a request for state this activation does not hold.
func (g *shardGrain) check(cacheID string, epoch uint64) error {
	if !g.init || epoch != g.epoch || cacheID != g.cacheID {
		return fmt.Errorf("%w: cache %s: grain has epoch %d, request names epoch %d (the grain re-activated empty)", ErrStateLost, cacheID, g.epoch, epoch)
	}
	return nil
}

func (g *shardGrain) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *messages.GrainInit:
		v, err := initView(m)
		if err == nil {
			*g = shardGrain{epoch: g.epoch, cacheID: m.CacheId, layer: int(m.Layer), init: true, view: v}
		}
		g.reply(c, err, nil)
	case *messages.GrainWrite:
		if err := g.check(m.CacheId, m.Epoch); err != nil {
			g.reply(c, err, nil)
			return
		}
		if m.BaseVersion != g.version {
			g.reply(c, fmt.Errorf("%w: cache %s layer %d: base version %d, committed is %d", ErrStale, m.CacheId, g.layer, m.BaseVersion, g.version), nil)
			return
		}
		next, err := applyWrite(g.view, m.Write)
		if err != nil {
			g.reply(c, fmt.Errorf("cache %s layer %d: %w", m.CacheId, g.layer, err), nil)
			return
		}
		g.staged, g.stagedVer = &next, m.BaseVersion+1
		g.reply(c, nil, nil)
	case *messages.GrainCommit:
		if err := g.check(m.CacheId, m.Epoch); err != nil {
			g.reply(c, err, nil)
			return
		}
		switch {
		case m.Abort:
			if g.staged != nil && g.stagedVer == m.Version {
				g.staged = nil
			}
		case g.version == m.Version: // a re-sent commit
		case g.staged == nil || g.stagedVer != m.Version:
			g.reply(c, fmt.Errorf("%w: cache %s layer %d: commit of version %d, staged is %d", ErrStale, m.CacheId, g.layer, m.Version, g.stagedVer), nil)
			return
		default:
			g.prev, g.hasPrev = g.view, true
			g.view, g.version, g.staged = *g.staged, m.Version, nil
		}
		g.reply(c, nil, nil)
	case *messages.GrainRead:
		if err := g.check(m.CacheId, m.Epoch); err != nil {
			g.reply(c, err, nil)
			return
		}
		v := g.view
		switch {
		case m.Version == g.version:
		case g.hasPrev && m.Version+1 == g.version:
			v = g.prev
		default:
			g.reply(c, fmt.Errorf("%w: cache %s layer %d: version %d (the grain holds %d)", ErrNotFound, m.CacheId, g.layer, m.Version, g.version), nil)
			return
		}
		data, err := v.MarshalBinary()
		g.reply(c, err, data)
	case *messages.GrainClose:
		if err := g.check(m.CacheId, m.Epoch); err != nil {
			g.reply(c, err, nil)
			return
		}
		*g = shardGrain{epoch: g.epoch}
		g.reply(c, nil, nil)
	}
}

// initView builds layer m.Layer's version-0 view from m.Spec.
func initView(m *messages.GrainInit) (mamba.View, error) {
	md := m.Spec.GetMamba()
	if md == nil {
		return mamba.View{}, fmt.Errorf("%w: cache %s: only Mamba caches run clustered so far", ErrInvalid, m.CacheId)
	}
	meta := mamba.Metadata{NumHiddenLayers: int(md.NumHiddenLayers), BatchSize: int(md.BatchSize), IntermediateSize: int(md.IntermediateSize),
		SSMStateSize: int(md.SsmStateSize), ConvKernelSize: int(md.ConvKernelSize)}
	dt := tensor.DType(m.Spec.GetStorage().GetDtype())
	c, err := mamba.Init(meta, dt)
	if err != nil {
		return mamba.View{}, err
	}
	return c.View(int(m.Layer))
}

// applyWrite applies a ConvSSMWrite as actors.MambaWrite does.
func applyWrite(v mamba.View, w *messages.LayerWrite) (mamba.View, error) {
	cs := w.GetConvSsm()
	if cs == nil {
		return v, fmt.Errorf("%w: layer %d: a %T write on a Mamba layer", ErrInvalid, w.Layer, w.Write)
	}
	var err error
	if cs.ConvColumn != nil {
		t, err := fromProto(cs.ConvColumn)
		if err != nil {
			return v, err
		}
		if v, err = v.UpdateConvState(t, int(cs.CachePosition)); err != nil {
			return v, err
		}
	}
	if cs.ConvWindow != nil {
		t, err := fromProto(cs.ConvWindow)
		if err != nil {
			return v, err
		}
		pos := make([]int32, t.Dim(-1))
		for i := range pos {
			pos[i] = int32(i)
		}
		if v, err = v.UpdateConvStatePositions(t, pos); err != nil {
			return v, err
		}
	}
	if cs.SsmState != nil {
		t, err := fromProto(cs.SsmState)
		if err != nil {
			return v, err
		}
		if v, err = v.UpdateSSMState(t); err != nil {
			return v, err
		}
	}
	return v, err
}

func fromProto(t *messages.Tensor) (tensor.Tensor, error) {
	shape := make([]int, len(t.Shape))
	for i, d := range t.Shape {
		shape[i] = int(d)
	}
	x, err := tensor.FromBytes(tensor.DType(t.Dtype), t.Data, shape...)
	if err != nil {
		return x, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return x, nil
}

func toProto(t tensor.Tensor) *messages.Tensor {
	if t.IsZero() {
		return nil
	}
	shape := make([]int64, t.Rank())
	for i, d := range t.Shape() {
		shape[i] = int64(d)
	}
	return &messages.Tensor{Dtype: messages.DType(t.DType()), Shape: shape, Data: t.Bytes()}
}
