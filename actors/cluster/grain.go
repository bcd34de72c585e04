package cluster

import (
	"crypto/rand"
	"encoding"
	"encoding/binary"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/messages"
)

// partSize bounds every grain message's payload: a write or a reply
// larger than this travels in parts (GrainPart, GrainFetch).
const partSize = 1 << 20

// DefaultHistory is how many published versions a grain keeps readable by
// Snapshot, the current one included, when Config.History is 0: the
// embedded runtime's default too. Versions share their unchanged storage,
// so a kept version costs only what its writes changed.
const DefaultHistory = 16

// keptReplies is how many large replies a grain keeps for their parts to
// be fetched (and re-sent replies of completed part-wise writes).
const keptReplies = 8

// shardGrain holds one layer shard of one cache: its committed view, the
// views of the versions before it (as many as GrainInit.history asks, the
// current one included: Snapshot reads them, and a reader of the previous
// version during a commit still reads it), and a staged view. Writes are applied with
// actors.Apply, the embedded runtime's own code. It draws a random epoch
// when it activates: after its member dies, the grain re-activates
// elsewhere empty, with another epoch, and every request naming the old
// epoch gets CODE_STATE_LOST instead of zeros.
type shardGrain struct {
	epoch   uint64
	cacheID string
	layer   int
	kind    string
	spec    actors.Spec
	init    bool

	version   uint64
	view      any
	older     []any // views of versions version-len(older) .. version-1
	history   int   // versions kept readable, the current one included
	staged    any
	hasStaged bool
	stagedVer uint64
	stagedSeq uint32               // writes applied to staged
	lastCall  string               // the last write's call id
	lastReply *messages.GrainReply // and its reply, for a re-sent write

	parts   map[string]*incomingWrite // part-wise writes being received
	replies map[string][]byte         // marshaled large replies by call id
	order   []string                  // call ids of replies, oldest first
}

// incomingWrite is a GrainWrite arriving in parts.
type incomingWrite struct {
	data [][]byte
	left int
}

func newShardGrain() *shardGrain {
	return &shardGrain{epoch: newEpoch()}
}

// newEpoch draws a random non-zero epoch.
func newEpoch() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1
}

// reply builds the grain's answer to a request.
func (g *shardGrain) reply(err error) *messages.GrainReply {
	st := &messages.Status{Code: messages.Code_CODE_OK}
	if err != nil {
		st = statusOf(err)
	}
	return &messages.GrainReply{Status: st, Epoch: g.epoch, Version: g.version}
}

// respond sends rep, in parts when it is larger than partSize: the first
// part now, the others kept under callID for GrainFetch.
func (g *shardGrain) respond(c actor.Context, rep *messages.GrainReply, callID string) {
	if proto.Size(rep) <= partSize || callID == "" {
		c.Respond(rep)
		return
	}
	data, err := proto.Marshal(rep)
	if err != nil {
		c.Respond(g.reply(fmt.Errorf("%w: cache %s layer %d: marshal reply: %v", ErrInvalid, g.cacheID, g.layer, err)))
		return
	}
	g.keep(callID, data)
	c.Respond(partOf(data, 0))
}

// keep stores a large reply for its parts to be fetched, dropping the
// oldest beyond keptReplies.
func (g *shardGrain) keep(callID string, data []byte) {
	if g.replies == nil {
		g.replies = map[string][]byte{}
	}
	if _, ok := g.replies[callID]; !ok {
		g.order = append(g.order, callID)
	}
	g.replies[callID] = data
	for len(g.order) > keptReplies {
		delete(g.replies, g.order[0])
		g.order = g.order[1:]
	}
}

// partOf returns part index of a marshaled reply.
func partOf(data []byte, index int) *messages.GrainReply {
	n := (len(data) + partSize - 1) / partSize
	lo, hi := index*partSize, min((index+1)*partSize, len(data))
	return &messages.GrainReply{Status: &messages.Status{Code: messages.Code_CODE_OK}, Parts: uint32(n), Part: data[lo:hi]}
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
		spec, v, err := initView(m)
		if err == nil {
			history := int(m.History)
			if history == 0 {
				history = DefaultHistory
			}
			*g = shardGrain{epoch: g.epoch, cacheID: m.CacheId, layer: int(m.Layer), kind: kindOf(m.Spec), spec: spec, init: true, view: v, history: history}
		}
		c.Respond(g.reply(err))
	case *messages.GrainWrite:
		g.respond(c, g.write(m), m.CallId)
	case *messages.GrainPart:
		g.part(c, m)
	case *messages.GrainFetch:
		data, ok := g.replies[m.CallId]
		if !ok || int(m.Index)*partSize >= len(data) {
			c.Respond(g.reply(fmt.Errorf("%w: cache %s layer %d: no part %d of a reply to call %s", ErrNotFound, m.CacheId, g.layer, m.Index, m.CallId)))
			return
		}
		c.Respond(partOf(data, int(m.Index)))
	case *messages.GrainCommit:
		c.Respond(g.commit(m))
	case *messages.GrainRead:
		g.respond(c, g.read(m), m.CallId)
	case *messages.GrainClose:
		if err := g.check(m.CacheId, m.Epoch); err != nil {
			c.Respond(g.reply(err))
			return
		}
		*g = shardGrain{epoch: g.epoch}
		c.Respond(g.reply(nil))
	}
}

// write stages m's write on the committed view. A write with no kind
// (an unwritten layer of a step) stages the view unchanged.
func (g *shardGrain) write(m *messages.GrainWrite) *messages.GrainReply {
	if err := g.check(m.CacheId, m.Epoch); err != nil {
		return g.reply(err)
	}
	if m.BaseVersion != g.version {
		return g.reply(fmt.Errorf("%w: cache %s layer %d: base version %d, committed is %d", ErrStale, m.CacheId, g.layer, m.BaseVersion, g.version))
	}
	if m.CallId != "" && m.CallId == g.lastCall {
		return g.lastReply // a re-sent write: applied once
	}
	base := g.view
	if m.Seq > 0 {
		if !g.hasStaged || g.stagedVer != m.BaseVersion+1 || g.stagedSeq != m.Seq {
			return g.reply(fmt.Errorf("%w: cache %s layer %d: write %d of version %d, but %d are staged", ErrStale, m.CacheId, g.layer, m.Seq, m.BaseVersion+1, g.stagedSeq))
		}
		base = g.staged
	}
	next, res := base, actors.Result{}
	if m.Write.GetWrite() != nil {
		w, err := writeFromProto(m.Write, g.spec)
		if err == nil {
			next, res, err = actors.Apply(base, w)
		}
		if err != nil {
			return g.reply(fmt.Errorf("cache %s layer %d: %w", m.CacheId, g.layer, err))
		}
	}
	rep := g.reply(nil)
	result, err := resultToProto(res)
	if err == nil && m.ReturnView {
		rep.View, err = marshalView(next)
	}
	if err != nil {
		return g.reply(fmt.Errorf("cache %s layer %d: %w", m.CacheId, g.layer, err))
	}
	rep.Result = result
	g.staged, g.hasStaged, g.stagedVer, g.stagedSeq = next, true, m.BaseVersion+1, m.Seq+1
	g.lastCall, g.lastReply = m.CallId, rep
	return rep
}

// part stores one part of a large write; with the last one it handles
// the write. A part of a write already handled gets that write's reply
// again.
func (g *shardGrain) part(c actor.Context, m *messages.GrainPart) {
	if data, ok := g.replies[m.CallId]; ok {
		c.Respond(partOf(data, 0))
		return
	}
	if m.Count == 0 || m.Index >= m.Count || m.Count > 1<<16 {
		c.Respond(g.reply(fmt.Errorf("%w: cache %s layer %d: part %d of %d of call %s", ErrInvalid, m.CacheId, g.layer, m.Index, m.Count, m.CallId)))
		return
	}
	if g.parts == nil {
		g.parts = map[string]*incomingWrite{}
	}
	in := g.parts[m.CallId]
	if in == nil {
		in = &incomingWrite{data: make([][]byte, m.Count), left: int(m.Count)}
		g.parts[m.CallId] = in
	}
	if int(m.Count) != len(in.data) {
		c.Respond(g.reply(fmt.Errorf("%w: cache %s layer %d: call %s has %d parts, part %d says %d", ErrInvalid, m.CacheId, g.layer, m.CallId, len(in.data), m.Index, m.Count)))
		return
	}
	if in.data[m.Index] == nil {
		in.data[m.Index] = m.Data
		in.left--
	}
	if in.left > 0 {
		c.Respond(g.reply(nil))
		return
	}
	delete(g.parts, m.CallId)
	var all []byte
	for _, d := range in.data {
		all = append(all, d...)
	}
	w := &messages.GrainWrite{}
	rep := g.reply(fmt.Errorf("%w: cache %s layer %d: call %s: the parts do not make a write", ErrInvalid, m.CacheId, g.layer, m.CallId))
	if err := proto.Unmarshal(all, w); err == nil {
		rep = g.write(w)
	}
	// The reply is kept whatever its size: a re-sent last part gets it again.
	data, err := proto.Marshal(rep)
	if err != nil {
		c.Respond(g.reply(fmt.Errorf("%w: cache %s layer %d: marshal reply: %v", ErrInvalid, g.cacheID, g.layer, err)))
		return
	}
	g.keep(m.CallId, data)
	c.Respond(partOf(data, 0))
}

// commit publishes (or drops) the staged version.
func (g *shardGrain) commit(m *messages.GrainCommit) *messages.GrainReply {
	if err := g.check(m.CacheId, m.Epoch); err != nil {
		return g.reply(err)
	}
	switch {
	case m.Rollback:
		switch {
		case g.version == m.Version && len(g.older) > 0:
			g.view, g.version = g.older[len(g.older)-1], m.Version-1
			g.older[len(g.older)-1] = nil
			g.older = g.older[:len(g.older)-1]
			g.staged, g.hasStaged = nil, false
		case g.version+1 == m.Version: // undone already, or never committed
		default:
			return g.reply(fmt.Errorf("%w: cache %s layer %d: rollback of version %d, the grain holds %d", ErrStale, m.CacheId, g.layer, m.Version, g.version))
		}
	case m.Abort:
		if g.hasStaged && g.stagedVer == m.Version {
			g.staged, g.hasStaged = nil, false
		}
	case g.version == m.Version: // a re-sent commit
	case !g.hasStaged || g.stagedVer != m.Version:
		return g.reply(fmt.Errorf("%w: cache %s layer %d: commit of version %d, staged is %d", ErrStale, m.CacheId, g.layer, m.Version, g.stagedVer))
	default:
		g.older = append(g.older, g.view)
		// keep history-1 readable versions, and at least the one before
		// the current, which a rollback restores
		if drop := len(g.older) - max(g.history-1, 1); drop > 0 {
			clear(g.older[:drop]) // let the collector have the views
			g.older = g.older[drop:]
		}
		g.view, g.version = g.staged, m.Version
		g.staged, g.hasStaged = nil, false
	}
	return g.reply(nil)
}

// read returns the view of the committed version or of a kept older one.
func (g *shardGrain) read(m *messages.GrainRead) *messages.GrainReply {
	if err := g.check(m.CacheId, m.Epoch); err != nil {
		return g.reply(err)
	}
	v := g.view
	if m.Version != g.version {
		back := g.version - m.Version // how many versions before the current one
		readable := uint64(min(len(g.older), g.history-1))
		if m.Version > g.version || back > readable {
			return g.reply(fmt.Errorf("%w: cache %s layer %d: version %d (the grain holds versions %d..%d)",
				ErrNotFound, m.CacheId, g.layer, m.Version, g.version-readable, g.version))
		}
		v = g.older[uint64(len(g.older))-back]
	}
	rep := g.reply(nil)
	if m.CheckOnly {
		return rep
	}
	data, err := marshalView(v)
	if err != nil {
		return g.reply(fmt.Errorf("cache %s layer %d: %w", m.CacheId, g.layer, err))
	}
	rep.View = data
	return rep
}

// initView builds layer m.Layer's (shard m.Shard's) version-0 view from
// m.Spec, with the embedded runtime's own code (actors.Spec.LayerViews,
// or ShardedViews when the spec's mesh has more than one device).
func initView(m *messages.GrainInit) (actors.Spec, any, error) {
	spec, err := specFromProto(m.Spec)
	if err != nil {
		return spec, nil, fmt.Errorf("cache %s: %w", m.CacheId, err)
	}
	if spec.Mesh == nil || spec.Mesh.NumDevices() <= 1 {
		if m.Shard != 0 {
			return spec, nil, fmt.Errorf("%w: cache %s: shard %d of an unsharded cache", ErrInvalid, m.CacheId, m.Shard)
		}
		views, err := spec.LayerViews()
		if err != nil {
			return spec, nil, fmt.Errorf("cache %s: %w", m.CacheId, err)
		}
		if int(m.Layer) >= len(views) {
			return spec, nil, fmt.Errorf("%w: cache %s: layer %d (the cache has layers 0..%d)", ErrInvalid, m.CacheId, m.Layer, len(views)-1)
		}
		return spec, views[m.Layer], nil
	}
	layout, err := spec.ShardedViews()
	if err != nil {
		return spec, nil, fmt.Errorf("cache %s: %w", m.CacheId, err)
	}
	if int(m.Layer) >= len(layout) {
		return spec, nil, fmt.Errorf("%w: cache %s: layer %d (the cache has layers 0..%d)", ErrInvalid, m.CacheId, m.Layer, len(layout)-1)
	}
	parts := layout[m.Layer].Parts()
	if int(m.Shard) >= len(parts) {
		return spec, nil, fmt.Errorf("%w: cache %s: shard %d (the mesh has devices 0..%d)", ErrInvalid, m.CacheId, m.Shard, len(parts)-1)
	}
	return spec, parts[m.Shard], nil
}

// kindOf names the kind of cache spec p describes.
func kindOf(p *messages.CacheSpec) string {
	switch p.GetMetadata().(type) {
	case *messages.CacheSpec_Transformer:
		return kindTransformer
	case *messages.CacheSpec_Paged:
		return kindPaged
	case *messages.CacheSpec_Mamba:
		return kindMamba
	case *messages.CacheSpec_Mamba2:
		return kindMamba2
	case *messages.CacheSpec_Lightning:
		return kindLightning
	}
	return ""
}

// The cache kinds, as kindOf names them.
const (
	kindTransformer = "transformer"
	kindPaged       = "paged"
	kindMamba       = "mamba"
	kindMamba2      = "mamba2"
	kindLightning   = "lightning"
)

// marshalView is a view's binary snapshot.
func marshalView(v any) ([]byte, error) {
	m, ok := v.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("%w: a %T view has no binary snapshot", ErrInvalid, v)
	}
	return m.MarshalBinary()
}
