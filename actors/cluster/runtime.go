package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/mamba"
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

func statusOf(err error) *messages.Status {
	code := messages.Code_CODE_INVALID_ARGUMENT
	switch {
	case errors.Is(err, ErrStateLost):
		code = messages.Code_CODE_STATE_LOST
	case errors.Is(err, ErrStale):
		code = messages.Code_CODE_STALE_VERSION
	case errors.Is(err, ErrNotFound):
		code = messages.Code_CODE_NOT_FOUND
	}
	return &messages.Status{Code: code, Message: err.Error()}
}

// Runtime is the clustered runtime: the embedded runtime's API (NewCache,
// Step, Current, Close) with every layer shard a grain on the cluster's
// members, identity cache/<id>/layer/<l>/shard/<s>. The runtime itself is
// a cluster member that hosts no grains. One Runtime drives a cache: its
// Cache handle is the step coordinator (it stages a step on every layer's
// grain, then commits all of them).
//
// Limits: only Mamba caches run clustered so far, unsharded (shard 0);
// views travel whole in one message (raised gRPC limits), not chunked.
type Runtime struct {
	m       *Member
	timeout time.Duration
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
	return &Runtime{m: m, timeout: t}, nil
}

// Close leaves the cluster.
func (r *Runtime) Close() error { r.m.Shutdown(); return nil }

// Identity returns the grain identity of layer l, shard s of cache id.
func Identity(id string, l, s int) string { return fmt.Sprintf("cache/%s/layer/%d/shard/%d", id, l, s) }

// call sends msg to a grain and returns its reply, retrying (with a
// backoff) calls that got no answer: every grain request is idempotent.
func (r *Runtime) call(ctx context.Context, identity string, msg any) (*messages.GrainReply, error) {
	res, err := r.callKind(ctx, identity, ShardKind, msg)
	if err != nil {
		return nil, err
	}
	if rep, ok := res.(*messages.GrainReply); ok {
		return rep, nil
	}
	return nil, fmt.Errorf("%w: %s: reply %T", ErrUnreachable, identity, res)
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
// concurrent use (steps are serialized by the handle).
type Cache struct {
	rt      *Runtime
	id      string
	batch   int
	epochs  []uint64
	mu      sync.Mutex
	version uint64
}

// NewCache creates cache id at version 0 on the grains of its layers
// (re-creating a cache whose state was lost works the same way).
func (r *Runtime) NewCache(id string, spec actors.Spec) (*Cache, error) {
	if spec.Mamba == nil || spec.Transformer != nil || spec.Paged != nil || spec.Mamba2 != nil || spec.Lightning != nil {
		return nil, fmt.Errorf("%w: create cache %s: only Mamba caches run clustered so far", ErrInvalid, id)
	}
	if spec.Mesh != nil && spec.Mesh.NumDevices() > 1 {
		return nil, fmt.Errorf("%w: create cache %s: clustered caches are not sharded over a mesh yet", ErrInvalid, id)
	}
	md := spec.Mamba.Metadata
	ps := &messages.CacheSpec{Metadata: &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{NumHiddenLayers: int64(md.NumHiddenLayers),
		BatchSize: int64(md.BatchSize), IntermediateSize: int64(md.IntermediateSize), SsmStateSize: int64(md.SSMStateSize),
		ConvKernelSize: int64(md.ConvKernelSize)}}, Storage: &messages.Storage{Dtype: messages.DType(spec.Mamba.DType)}}
	c := &Cache{rt: r, id: id, batch: md.BatchSize, epochs: make([]uint64, md.NumHiddenLayers)}
	err := c.each(context.Background(), func(l int) (any, func(*messages.GrainReply)) {
		return &messages.GrainInit{CacheId: id, Layer: uint32(l), Spec: ps}, func(rep *messages.GrainReply) { c.epochs[l] = rep.Epoch }
	})
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", id, err)
	}
	return c, nil
}

// ID returns the cache's id.
func (c *Cache) ID() string { return c.id }

// Layers returns the number of layers.
func (c *Cache) Layers() int { return len(c.epochs) }

// each calls every layer's grain concurrently with the message build
// returns, passing OK replies to its callback; it returns the first
// error, state loss first (naming every lost layer).
func (c *Cache) each(ctx context.Context, build func(l int) (any, func(*messages.GrainReply))) error {
	errs := make([]error, len(c.epochs))
	var lost []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for l := range c.epochs {
		msg, ok := build(l)
		if msg == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := c.rt.call(ctx, Identity(c.id, l, 0), msg)
			switch {
			case err != nil:
				errs[l] = err
			case rep.Status.GetCode() == messages.Code_CODE_STATE_LOST:
				mu.Lock()
				lost = append(lost, l)
				mu.Unlock()
			case rep.Status.GetCode() != messages.Code_CODE_OK:
				errs[l] = statusError(rep.Status)
			default:
				if ok != nil {
					ok(rep)
				}
			}
		}()
	}
	wg.Wait()
	if len(lost) > 0 {
		return fmt.Errorf("%w: cache %s: layers %v re-activated empty after their member was lost: sequences 0..%d of cache %s have no state; re-create the cache",
			ErrStateLost, c.id, sortInts(lost), c.batch-1, c.id)
	}
	return errors.Join(errs...)
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

// Step writes every listed layer on top of version base and publishes
// base+1 on all of them: each layer's grain stages its write, and only
// when all did are they committed (otherwise the staged writes are
// aborted and base stays current). Writes must be *actors.MambaWrite.
func (c *Cache) Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (uint64, []actors.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if base != c.version {
		return c.version, nil, fmt.Errorf("%w: cache %s: step on version %d, current is %d", ErrStale, c.id, base, c.version)
	}
	byLayer := map[int]*messages.LayerWrite{}
	for _, w := range writes {
		mw, ok := w.Write.(*actors.MambaWrite)
		if !ok {
			return c.version, nil, fmt.Errorf("%w: cache %s layer %d: a %T write on a clustered Mamba cache", actors.ErrKind, c.id, w.Layer, w.Write)
		}
		if w.Layer < 0 || w.Layer >= len(c.epochs) || byLayer[w.Layer] != nil {
			return c.version, nil, fmt.Errorf("%w: cache %s: layer %d is out of range 0..%d or written twice", ErrInvalid, c.id, w.Layer, len(c.epochs)-1)
		}
		byLayer[w.Layer] = &messages.LayerWrite{Layer: uint32(w.Layer), Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{
			ConvColumn: toProto(mw.ConvColumn), CachePosition: int32(mw.CachePosition), ConvWindow: toProto(mw.ConvWindow), SsmState: toProto(mw.SSMState)}}}
	}
	// Unwritten layers advance too (an empty write), so every grain holds
	// the same version number.
	err := c.each(ctx, func(l int) (any, func(*messages.GrainReply)) {
		w := byLayer[l]
		if w == nil {
			w = &messages.LayerWrite{Layer: uint32(l), Write: &messages.LayerWrite_ConvSsm{ConvSsm: &messages.ConvSSMWrite{}}}
		}
		return &messages.GrainWrite{CacheId: c.id, Epoch: c.epochs[l], BaseVersion: base, Write: w}, nil
	})
	commit := func(abort bool) error {
		return c.each(ctx, func(l int) (any, func(*messages.GrainReply)) {
			return &messages.GrainCommit{CacheId: c.id, Epoch: c.epochs[l], Version: base + 1, Abort: abort}, nil
		})
	}
	if err != nil {
		_ = commit(true)
		return c.version, nil, fmt.Errorf("cache %s: step on version %d: %w", c.id, base, err)
	}
	if err := commit(false); err != nil {
		return c.version, nil, fmt.Errorf("cache %s: commit of version %d: %w", c.id, base+1, err)
	}
	c.version = base + 1
	return c.version, make([]actors.Result, len(writes)), nil
}

// Current returns the current version, read from every layer's grain.
func (c *Cache) Current(ctx context.Context) (actors.Version, error) {
	c.mu.Lock()
	n := c.version
	c.mu.Unlock()
	views := make([]any, len(c.epochs))
	var bad []error
	var mu sync.Mutex
	err := c.each(ctx, func(l int) (any, func(*messages.GrainReply)) {
		return &messages.GrainRead{CacheId: c.id, Epoch: c.epochs[l], Version: n}, func(rep *messages.GrainReply) {
			v, err := mamba.UnmarshalView(rep.View)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				bad = append(bad, fmt.Errorf("layer %d: %w", l, err))
			}
			views[l] = v
		}
	})
	if err = errors.Join(append([]error{err}, bad...)...); err != nil {
		return actors.Version{}, fmt.Errorf("cache %s: read version %d: %w", c.id, n, err)
	}
	return actors.Version{Number: n, Views: views}, nil
}

// Close drops the cache's state on its grains.
func (c *Cache) Close() error {
	return c.each(context.Background(), func(l int) (any, func(*messages.GrainReply)) {
		return &messages.GrainClose{CacheId: c.id, Epoch: c.epochs[l]}, nil
	})
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
