package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"

	"google.golang.org/protobuf/proto"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/internal/meters"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// Errors of the clustered runtime; errors matching the embedded runtime's
// (stale base, not found, invalid) wrap its sentinels.
var (
	// ErrStateLost reports state that lived on a member that is gone: a
	// grain answered with another epoch than the one the cache was
	// created with. The message names the cache, the layers and the
	// sequences (batch rows) whose state is gone; re-create the cache.
	ErrStateLost = errors.New("cluster: state lost")
	// ErrUnreachable reports a grain call that got no answer after its
	// retries (no member hosts the kind, or the member died mid-call).
	ErrUnreachable = errors.New("cluster: grain unreachable")

	ErrStale    = actors.ErrStale
	ErrNotFound = actors.ErrNotFound
	ErrInvalid  = actors.ErrInvalid
)

// statusOf is a grain's reply status for err: CODE_STATE_LOST for lost
// state, otherwise the embedded runtime's code (stale, not found, out of
// range, no free pages, ...), so the client's errors match the same
// sentinels as embedded ones.
func statusOf(err error) *messages.Status {
	if errors.Is(err, ErrStateLost) {
		return &messages.Status{Code: messages.Code_CODE_STATE_LOST, Message: err.Error()}
	}
	return actors.StatusOf(err)
}

// Runtime is the clustered runtime: the embedded runtime's API (NewCache,
// Step, Current, Close) with every layer shard a grain on the cluster's
// members, identity cache/<id>/layer/<l>/shard/<s>. The runtime itself is
// a cluster member that hosts no grains. One Runtime drives a cache: its
// Cache handle is the step coordinator (it stages a step on every layer's
// grain, then commits all of them).
//
// Limits: caches run unsharded (shard 0 only).
type Runtime struct {
	m       *Member
	timeout time.Duration
	calls   atomic.Uint64
	meters  *meters.Set // nil without Config.Meter
	history int         // Config.History
}

// NewRuntime joins the cluster described by cfg as a client.
func NewRuntime(cfg Config) (*Runtime, error) {
	m, err := start(cfg, false)
	if err != nil {
		return nil, err
	}
	t := cfg.RequestTimeout
	if t == 0 {
		t = 5 * time.Second
	}
	return &Runtime{m: m, timeout: t, meters: m.meters, history: cfg.History}, nil
}

// Code names err's status code as the metrics label it, as actors.Code
// does, plus "state_lost" and "unreachable".
func Code(err error) string {
	switch {
	case errors.Is(err, ErrStateLost):
		return "state_lost"
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	}
	return actors.Code(err)
}

// observe records a cache API call's duration and outcome.
func (c *Cache) observe(op string, start time.Time, err *error) {
	if c.rt.meters == nil {
		return
	}
	c.rt.meters.Request(c.id, op, start, Code(*err))
}

// System returns the runtime's actor system (its event stream carries
// the KV events of the caches' pools).
func (r *Runtime) System() *actor.ActorSystem { return r.m.c.ActorSystem }

// Close leaves the cluster.
func (r *Runtime) Close() error { r.m.Shutdown(); return nil }

// Identity returns the grain identity of layer l, shard s of cache id.
func Identity(id string, l, s int) string { return fmt.Sprintf("cache/%s/layer/%d/shard/%d", id, l, s) }

// call sends msg to a grain of cache id and returns its OK reply, or the
// error its status carries (ErrStateLost for CODE_STATE_LOST). A write
// larger than partSize goes in GrainParts, and a reply that came in parts
// is fetched whole. Calls that got no answer are retried (with a
// backoff): every grain request is idempotent.
func (r *Runtime) call(ctx context.Context, id, identity string, msg any) (*messages.GrainReply, error) {
	callID := fmt.Sprintf("%s/%d", r.m.Address(), r.calls.Add(1))
	var rep *messages.GrainReply
	var err error
	switch m := msg.(type) {
	case *messages.GrainWrite:
		m.CallId = callID
		if proto.Size(m) > partSize {
			rep, err = r.sendParts(ctx, id, identity, callID, m)
			break
		}
		rep, err = r.call1(ctx, identity, m)
	case *messages.GrainRead:
		m.CallId = callID
		rep, err = r.call1(ctx, identity, m)
	default:
		rep, err = r.call1(ctx, identity, msg)
	}
	if err == nil && rep.Parts > 0 {
		rep, err = r.fetchParts(ctx, id, identity, callID, rep)
	}
	if err != nil {
		return nil, err
	}
	switch rep.Status.GetCode() {
	case messages.Code_CODE_OK:
		return rep, nil
	case messages.Code_CODE_STATE_LOST:
		return nil, fmt.Errorf("%w: %s: %s", ErrStateLost, identity, rep.Status.GetMessage())
	}
	return nil, statusError(rep.Status)
}

// call1 is one request and its GrainReply.
func (r *Runtime) call1(ctx context.Context, identity string, msg any) (*messages.GrainReply, error) {
	res, err := r.callKind(ctx, identity, ShardKind, msg)
	if err != nil {
		return nil, err
	}
	if rep, ok := res.(*messages.GrainReply); ok {
		return rep, nil
	}
	return nil, fmt.Errorf("%w: %s: reply %T", ErrUnreachable, identity, res)
}

// sendParts sends write w in parts of at most partSize and returns the
// reply to the last one (the write's).
func (r *Runtime) sendParts(ctx context.Context, id, identity, callID string, w *messages.GrainWrite) (*messages.GrainReply, error) {
	data, err := proto.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: marshal write: %v", ErrInvalid, identity, err)
	}
	n := (len(data) + partSize - 1) / partSize
	var rep *messages.GrainReply
	for i := range n {
		part := &messages.GrainPart{CacheId: id, CallId: callID, Index: uint32(i), Count: uint32(n), Data: data[i*partSize : min((i+1)*partSize, len(data))]}
		if rep, err = r.call1(ctx, identity, part); err != nil {
			return nil, err
		}
		if rep.Parts == 0 && rep.Status.GetCode() != messages.Code_CODE_OK {
			return rep, nil
		}
	}
	return rep, nil
}

// fetchParts fetches the other parts of a reply whose first part is
// first, and decodes the whole reply.
func (r *Runtime) fetchParts(ctx context.Context, id, identity, callID string, first *messages.GrainReply) (*messages.GrainReply, error) {
	data := append([]byte(nil), first.Part...)
	for i := 1; i < int(first.Parts); i++ {
		rep, err := r.call1(ctx, identity, &messages.GrainFetch{CacheId: id, CallId: callID, Index: uint32(i)})
		if err != nil {
			return nil, err
		}
		if rep.Parts != first.Parts {
			if rep.Status.GetCode() != messages.Code_CODE_OK {
				return rep, nil // e.g. the grain no longer keeps the reply
			}
			return nil, fmt.Errorf("%w: %s: part %d of the reply to call %s says %d parts, the first said %d", ErrUnreachable, identity, i, callID, rep.Parts, first.Parts)
		}
		data = append(data, rep.Part...)
	}
	full := &messages.GrainReply{}
	if err := proto.Unmarshal(data, full); err != nil {
		return nil, fmt.Errorf("%w: %s: a reply of %d parts does not decode: %v", ErrUnreachable, identity, first.Parts, err)
	}
	return full, nil
}

// callKind sends msg to grain identity of kind, retrying with a backoff
// calls that got no answer (protoactor's own retries back off for
// nanoseconds: pitfall 4).
func (r *Runtime) callKind(ctx context.Context, identity, kind string, msg any) (any, error) {
	var last error
	for attempt := range 6 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res, err := r.m.c.Request(identity, kind, msg, cluster.WithTimeout(r.timeout), cluster.WithRetryCount(1))
		if err == nil && res != nil {
			return res, nil
		}
		if err == nil {
			err = fmt.Errorf("no reply")
		}
		last = err
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
	return nil, fmt.Errorf("%w: %s: %v", ErrUnreachable, identity, last)
}

// statusError turns a failed reply's status into the embedded runtime's
// error type, which errors.Is matches against its sentinels.
func statusError(s *messages.Status) error {
	return &actors.StatusError{Code: s.Code, Message: s.Message}
}

func isNoFreePages(err error) bool { return errors.Is(err, pagemanager.ErrNoFreePages) }

func isOutOfRange(err error) bool { return errors.Is(err, pagemanager.ErrOutOfRange) }

// Cache is a handle on a clustered cache; its methods are safe for
// concurrent use (steps and transactions are serialized by the handle,
// the coordinator of the cache's grains).
//
// The handle keeps the views of the current version it has seen (the
// staged views its writes returned, which its commit published): Current
// still asks every grain whether it holds that version with the epoch the
// cache was created with (a lost member's grains answer state lost), but
// fetches views only for layers it does not know.
type Cache struct {
	rt     *Runtime
	id     string
	kind   string
	batch  int
	epochs [][]uint64        // per layer, per shard
	layout []*actors.Sharded // per layer, when the cache is sharded over a mesh
	pool   *localPool        // a paged cache's Pool, when its spec has one

	mu      sync.Mutex
	version uint64
	views   []any // views of version; nil: unknown
	txn     *Txn  // the open transaction
}

// NewCache creates cache id at version 0 on the grains of its layers
// (re-creating a cache whose state was lost works the same way). A paged
// spec with a Pool gets its pool in this process, serialised by the
// handle, its KV events published on this runtime's event stream as
// actors.KVEvent (the scheduler owns the page table, as in vLLM; the
// members own the KV).
func (r *Runtime) NewCache(id string, spec actors.Spec) (*Cache, error) {
	views, err := spec.LayerViews()
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", id, err)
	}
	shards := 1
	var layout []*actors.Sharded
	if spec.Mesh != nil && spec.Mesh.NumDevices() > 1 {
		if layout, err = spec.ShardedViews(); err != nil {
			return nil, fmt.Errorf("create cache %s: %w", id, err)
		}
		shards = spec.Mesh.NumDevices()
	}
	gs := spec // the grains hold the KV; the pool stays here
	if gs.Paged != nil && gs.Paged.Pool != nil {
		p := *gs.Paged
		p.Pool = nil
		gs.Paged = &p
	}
	ps, err := specToProto(gs)
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", id, err)
	}
	c := &Cache{rt: r, id: id, kind: kindOf(ps), batch: batchOf(spec), epochs: make([][]uint64, len(views)), layout: layout, views: make([]any, len(views))}
	for l := range c.epochs {
		c.epochs[l] = make([]uint64, shards)
	}
	if spec.Paged != nil && spec.Paged.Pool != nil {
		if c.pool, err = newLocalPool(id, *spec.Paged, r.m.c.ActorSystem, r.meters); err != nil {
			return nil, fmt.Errorf("create cache %s: %w", id, err)
		}
	}
	reps, err := c.each(context.Background(), func(l, s int) any {
		return &messages.GrainInit{CacheId: id, Layer: uint32(l), Shard: uint32(s), Spec: ps, History: uint32(r.history)}
	})
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", id, err)
	}
	for l := range reps {
		for s, rep := range reps[l] {
			c.epochs[l][s] = rep.Epoch
		}
	}
	return c, nil
}

// batchOf is the number of sequences (batch rows, or a paged cache's
// sequences) spec's cache holds: what a state-lost error names.
func batchOf(spec actors.Spec) int {
	switch {
	case spec.Transformer != nil:
		return spec.Transformer.Metadata.BatchSize
	case spec.Paged != nil:
		return spec.Paged.Metadata.BatchSize
	case spec.Mamba != nil:
		return spec.Mamba.Metadata.BatchSize
	case spec.Mamba2 != nil:
		return spec.Mamba2.Metadata.BatchSize
	case spec.Lightning != nil && spec.Lightning.Metadata.BatchSize != nil:
		return *spec.Lightning.Metadata.BatchSize
	}
	return 0
}

// ID returns the cache's id.
func (c *Cache) ID() string { return c.id }

// Layers returns the number of layers.
func (c *Cache) Layers() int { return len(c.epochs) }

// each sends every layer shard's grain, concurrently, the message build
// returns for it (nil: none) and returns the OK replies by layer and
// shard (nil where nothing was sent); it returns the first error, state
// loss first (naming every lost layer).
func (c *Cache) each(ctx context.Context, build func(l, s int) any) ([][]*messages.GrainReply, error) {
	reps := make([][]*messages.GrainReply, len(c.epochs))
	errs := make([][]error, len(c.epochs))
	var wg sync.WaitGroup
	for l := range c.epochs {
		reps[l] = make([]*messages.GrainReply, len(c.epochs[l]))
		errs[l] = make([]error, len(c.epochs[l]))
		for s := range c.epochs[l] {
			msg := build(l, s)
			if msg == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				reps[l][s], errs[l][s] = c.rt.call(ctx, c.id, Identity(c.id, l, s), msg)
			}()
		}
	}
	wg.Wait()
	var lost []int
	var other []error
	for l := range errs {
		for _, err := range errs[l] {
			switch {
			case errors.Is(err, ErrStateLost):
				if len(lost) == 0 || lost[len(lost)-1] != l {
					lost = append(lost, l)
				}
			case err != nil:
				other = append(other, err)
			}
		}
	}
	if len(lost) > 0 {
		return nil, c.lostError(lost)
	}
	return reps, errors.Join(other...)
}

// lostError names the cache, its lost layers and the sequences whose state
// is gone.
func (c *Cache) lostError(lost []int) error {
	seqs := "every sequence"
	switch {
	case c.pool != nil:
		c.pool.mu.Lock()
		ids := c.pool.p.Sequences()
		c.pool.mu.Unlock()
		seqs = fmt.Sprintf("the %d sequences in its pool %v", len(ids), ids)
	case c.batch > 0:
		seqs = fmt.Sprintf("sequences 0..%d (batch rows)", c.batch-1)
	}
	return fmt.Errorf("%w: cache %s: layers %v re-activated empty after their member was lost: %s of cache %s have no state; re-create the cache",
		ErrStateLost, c.id, sortInts(lost), seqs, c.id)
}

func sortInts(s []int) []int {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

// Txn is an open transaction on a clustered cache (Cache.Begin): each
// WriteLayer stages one layer's write on its grain and returns what the
// write returns (a contiguous cache's key, value and mask) with the
// staged view; Commit stages an unchanged view on the layers not written,
// then publishes base+1 on every grain. Like the embedded runtime's Txn.
type Txn struct {
	c       *Cache
	base    uint64
	mu      sync.Mutex
	written []int // writes per layer
	staged  []any
	done    bool
}

// Begin opens a transaction on version base; a cache has at most one open
// transaction (a second Begin fails with ErrBusy until it ends).
func (c *Cache) Begin(ctx context.Context, base uint64) (_ *Txn, err error) {
	defer c.observe("begin", time.Now(), &err)
	c.mu.Lock()
	defer c.mu.Unlock()
	if base != c.version {
		return nil, fmt.Errorf("%w: cache %s: begin on version %d, current is %d", ErrStale, c.id, base, c.version)
	}
	if c.txn != nil {
		return nil, fmt.Errorf("%w: cache %s: a transaction on version %d is open", actors.ErrBusy, c.id, c.txn.base)
	}
	c.txn = &Txn{c: c, base: base, written: make([]int, len(c.epochs)), staged: make([]any, len(c.epochs))}
	return c.txn, nil
}

// WriteLayer stages w on layer's grain, on top of the layer's earlier
// writes in this transaction (writes to one layer are applied in the
// order WriteLayer is called; call it for one layer from one goroutine
// at a time).
func (t *Txn) WriteLayer(ctx context.Context, layer int, w actors.Write) (_ actors.Result, err error) {
	defer t.c.observe("write_layer", time.Now(), &err)
	c := t.c
	t.mu.Lock()
	done := t.done
	var seq int
	if !done && layer >= 0 && layer < len(c.epochs) {
		seq = t.written[layer]
		t.written[layer]++
	}
	t.mu.Unlock()
	if done {
		return actors.Result{}, fmt.Errorf("%w: cache %s: the transaction on version %d has ended", ErrInvalid, c.id, t.base)
	}
	if layer < 0 || layer >= len(c.epochs) {
		return actors.Result{}, fmt.Errorf("%w: cache %s: layer %d is out of range 0..%d", ErrInvalid, c.id, layer, len(c.epochs)-1)
	}
	parts := []actors.Write{w}
	if c.layout != nil {
		var err error
		if parts, err = actors.SplitWrite(w, c.layout[layer]); err != nil {
			return actors.Result{}, fmt.Errorf("cache %s layer %d: %w", c.id, layer, err)
		}
	}
	msgs := make([]*messages.GrainWrite, len(parts))
	for s, p := range parts {
		pw, err := writeToProto(layer, p)
		if err != nil {
			return actors.Result{}, fmt.Errorf("cache %s layer %d: %w", c.id, layer, err)
		}
		msgs[s] = &messages.GrainWrite{CacheId: c.id, Epoch: c.epochs[layer][s], BaseVersion: t.base, Write: pw, ReturnView: true, Seq: uint32(seq)}
	}
	reps, err := c.each(ctx, func(l, s int) any {
		if l != layer {
			return nil
		}
		return msgs[s]
	})
	if err != nil {
		return actors.Result{}, fmt.Errorf("cache %s: write layer %d on version %d: %w", c.id, layer, t.base, err)
	}
	results := make([]actors.Result, len(parts))
	for s, rep := range reps[layer] {
		res, err := resultFromProto(rep.Result)
		if err == nil {
			res.View, err = unmarshalView(c.kind, rep.View)
		}
		if err != nil {
			return actors.Result{}, fmt.Errorf("cache %s layer %d shard %d: %w", c.id, layer, s, err)
		}
		results[s] = res
	}
	res := results[0]
	if c.layout != nil {
		views := make([]any, len(results))
		for s, r := range results {
			views[s] = r.View
		}
		sh, err := c.layout[layer].WithParts(views)
		if err != nil {
			return actors.Result{}, fmt.Errorf("cache %s layer %d: %w", c.id, layer, err)
		}
		res = actors.Result{Parts: results, View: sh}
	}
	t.mu.Lock()
	t.staged[layer] = res.View
	t.mu.Unlock()
	return res, nil
}

// Commit publishes base+1 on every layer's grain and returns it. When a
// grain fails, base stays current: the grains that had committed undo it
// (a grain keeps the version before its current one for that), the others
// drop their staged writes. Only if undoing fails too (a member
// unreachable mid-commit) do layers disagree on the version; the error
// says so, and the cache must be re-created.
func (t *Txn) Commit(ctx context.Context) (_ uint64, err error) {
	defer t.c.observe("commit", time.Now(), &err)
	c := t.c
	if t.done {
		return 0, fmt.Errorf("%w: cache %s: the transaction on version %d has ended", ErrInvalid, c.id, t.base)
	}
	defer t.end()
	// Unwritten layers advance too (an unchanged view), so every grain
	// holds the same version number.
	_, err = c.each(ctx, func(l, s int) any {
		if t.written[l] > 0 {
			return nil
		}
		return &messages.GrainWrite{CacheId: c.id, Epoch: c.epochs[l][s], BaseVersion: t.base, Write: &messages.LayerWrite{Layer: uint32(l)}}
	})
	if err == nil {
		var reps [][]*messages.GrainReply // nil when state was lost: nothing to undo
		reps, err = c.each(ctx, func(l, s int) any {
			return &messages.GrainCommit{CacheId: c.id, Epoch: c.epochs[l][s], Version: t.base + 1}
		})
		if err != nil && reps != nil {
			// Some grains may have committed: undo theirs, so that every
			// grain holds base again and the cache stays usable.
			if rerr := t.rollback(ctx); rerr != nil {
				return t.base, fmt.Errorf("cache %s: commit of version %d: %w; undoing it on the grains that committed failed, so layers disagree on the version: re-create the cache: %w",
					c.id, t.base+1, err, rerr)
			}
		}
	}
	if err != nil {
		_ = t.abort(ctx)
		return t.base, fmt.Errorf("cache %s: commit of version %d: %w", c.id, t.base+1, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version = t.base + 1
	for l, v := range t.staged {
		if v != nil {
			c.views[l] = v
		}
	}
	return c.version, nil
}

// Abort drops the staged writes; base stays current.
func (t *Txn) Abort(ctx context.Context) (err error) {
	defer t.c.observe("abort", time.Now(), &err)
	if t.done {
		return nil
	}
	defer t.end()
	return t.abort(ctx)
}

// rollback undoes version base+1 on every grain: the ones that committed
// it hold base again, and for the others (which never committed it, or
// whose reply was lost) the rollback is a no-op.
func (t *Txn) rollback(ctx context.Context) error {
	c := t.c
	_, err := c.each(ctx, func(l, s int) any {
		return &messages.GrainCommit{CacheId: c.id, Epoch: c.epochs[l][s], Version: t.base + 1, Rollback: true}
	})
	return err
}

func (t *Txn) abort(ctx context.Context) error {
	c := t.c
	_, err := c.each(ctx, func(l, s int) any {
		return &messages.GrainCommit{CacheId: c.id, Epoch: c.epochs[l][s], Version: t.base + 1, Abort: true}
	})
	return err
}

func (t *Txn) end() {
	t.done = true
	t.c.mu.Lock()
	if t.c.txn == t {
		t.c.txn = nil
	}
	t.c.mu.Unlock()
}

// Step writes every listed layer on top of version base and publishes
// base+1 on all of them (a transaction: each layer's grain stages its
// write, and only when all did are they committed; otherwise the staged
// writes are aborted and base stays current). It returns one Result per
// write, in order.
func (c *Cache) Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (_ uint64, _ []actors.Result, err error) {
	defer c.observe("step", time.Now(), &err)
	t, err := c.Begin(ctx, base)
	if err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.version, nil, err
	}
	results := make([]actors.Result, len(writes))
	errs := make([]error, len(writes))
	var wg sync.WaitGroup
	seen := map[int]bool{}
	for i, w := range writes {
		if w.Layer < 0 || w.Layer >= len(c.epochs) || seen[w.Layer] {
			_ = t.Abort(ctx)
			return base, nil, fmt.Errorf("%w: cache %s: layer %d is out of range 0..%d or written twice", ErrInvalid, c.id, w.Layer, len(c.epochs)-1)
		}
		seen[w.Layer] = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = t.WriteLayer(ctx, w.Layer, w.Write)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = t.Abort(ctx)
		return base, nil, fmt.Errorf("cache %s: step on version %d: %w", c.id, base, err)
	}
	v, err := t.Commit(ctx)
	return v, results, err
}

// Insert puts other's rows (a prefilled contiguous cache, one view per
// layer) into batch slots [slot, slot+B') of every layer on top of
// version base and publishes base+1, as the embedded runtime's
// Cache.Insert does; each layer's view travels to its grains as a
// snapshot (in parts when large). Contiguous caches only.
func (c *Cache) Insert(ctx context.Context, base uint64, slot int, other transformer.Cache) (uint64, error) {
	if other.Len() != len(c.epochs) {
		return base, fmt.Errorf("%w: cache %s: insert of a cache of %d layers into %d layers", ErrInvalid, c.id, other.Len(), len(c.epochs))
	}
	writes := make([]actors.LayerWrite, other.Len())
	for l := range writes {
		v, err := other.View(l)
		if err != nil {
			return base, fmt.Errorf("cache %s: insert: %w", c.id, err)
		}
		writes[l] = actors.LayerWrite{Layer: l, Write: &actors.InsertWrite{Slot: slot, Other: v}}
	}
	v, _, err := c.Step(ctx, base, writes)
	return v, err
}

// Current returns the current version: every grain confirms it holds the
// version with the cache's epoch, and views the handle does not know
// are read from the grains (in parts of at most 1 MiB).
func (c *Cache) Current(ctx context.Context) (_ actors.Version, err error) {
	defer c.observe("current", time.Now(), &err)
	c.mu.Lock()
	n := c.version
	views := append([]any(nil), c.views...)
	c.mu.Unlock()
	return c.read(ctx, n, views)
}

// Snapshot returns version number if the grains still hold it: the last
// Config.History versions (DefaultHistory, 16, when 0), the current one
// included, as the embedded runtime keeps; older and future versions are
// ErrNotFound.
func (c *Cache) Snapshot(ctx context.Context, number uint64) (_ actors.Version, err error) {
	defer c.observe("snapshot", time.Now(), &err)
	c.mu.Lock()
	views := make([]any, len(c.views))
	if number == c.version {
		copy(views, c.views)
	}
	c.mu.Unlock()
	return c.read(ctx, number, views)
}

// read returns version n, reading from the grains the views not given.
func (c *Cache) read(ctx context.Context, n uint64, views []any) (actors.Version, error) {
	reps, err := c.each(ctx, func(l, s int) any {
		return &messages.GrainRead{CacheId: c.id, Epoch: c.epochs[l][s], Version: n, CheckOnly: views[l] != nil}
	})
	if err != nil {
		return actors.Version{}, fmt.Errorf("cache %s: read version %d: %w", c.id, n, err)
	}
	for l := range views {
		if views[l] != nil {
			continue
		}
		parts := make([]any, len(reps[l]))
		for s, rep := range reps[l] {
			if parts[s], err = unmarshalView(c.kind, rep.View); err != nil {
				return actors.Version{}, fmt.Errorf("cache %s: read version %d: layer %d shard %d: %w", c.id, n, l, s, err)
			}
		}
		views[l] = parts[0]
		if c.layout != nil {
			if views[l], err = c.layout[l].WithParts(parts); err != nil {
				return actors.Version{}, fmt.Errorf("cache %s: read version %d: layer %d: %w", c.id, n, l, err)
			}
		}
	}
	c.mu.Lock()
	if c.version == n {
		for l, v := range views {
			if c.views[l] == nil {
				c.views[l] = v
			}
		}
	}
	c.mu.Unlock()
	return actors.Version{Number: n, Views: views}, nil
}

// Close drops the cache's state on its grains.
func (c *Cache) Close() error {
	c.rt.meters.Forget(c.id)
	_, err := c.each(context.Background(), func(l, s int) any {
		return &messages.GrainClose{CacheId: c.id, Epoch: c.epochs[l][s]}
	})
	return err
}

// unmarshalView decodes a view snapshot of a cache of kind.
func unmarshalView(kind string, data []byte) (any, error) {
	switch kind {
	case kindTransformer:
		return transformer.UnmarshalView(data)
	case kindPaged:
		return paged.UnmarshalView(data)
	case kindMamba:
		return mamba.UnmarshalView(data)
	case kindMamba2:
		return mamba2.UnmarshalView(data)
	case kindLightning:
		return lightning.UnmarshalView(data)
	}
	return nil, fmt.Errorf("%w: a view of unknown kind %q", ErrInvalid, kind)
}

// Placement returns the address of the member that hosts layer l, shard s
// of cache id (activating the grain if it is not active).
func (r *Runtime) Placement(id string, l, s int) (string, error) {
	pid := r.m.c.Get(Identity(id, l, s), ShardKind)
	if pid == nil {
		return "", fmt.Errorf("%w: %s: no member hosts it", ErrUnreachable, Identity(id, l, s))
	}
	return pid.Address, nil
}
