package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/pagemanager"
	"github.com/kvmesh/kvmesh/sharding"
)

// Spec says what cache to create: exactly one of the kind fields
// (Transformer, Paged, Mamba, Mamba2, Lightning) is set, and optionally the
// device mesh the cache is sharded over.
//
// With a Mesh of more than one device, every layer is cut over the mesh by
// its kind's View.Specs for PartitionAxis in Mode (for the default
// PartitionAxis: batch rows over ("fsdp", "dp") when both axes are in the
// mesh, and the heads of paged, Mamba, Mamba2 and lightning layers over tp;
// a contiguous cache's kv heads follow kv_head_axis, which eformer v0.0.38
// leaves unsharded, so set KVHeadAxis and DecodeKVHeadAxis to tp to cut
// them). Each version then holds a *Sharded per layer, and every step is
// applied by one shard actor per device (see the package documentation).
// An axis whose mesh axes are missing or do not divide it is replicated;
// specs a part view cannot express (a kv length or conv kernel cut over
// sp, for instance) make NewCache fail.
type Spec struct {
	Transformer *TransformerSpec
	Paged       *PagedSpec
	Mamba       *MambaSpec
	Mamba2      *Mamba2Spec
	Lightning   *LightningSpec

	// Mesh is the device mesh; nil, or a mesh of one device, leaves the
	// cache unsharded.
	Mesh *sharding.Mesh
	// PartitionAxis maps the cache's semantic axes to mesh axes; nil means
	// sharding.DefaultPartitionAxis().
	PartitionAxis *sharding.PartitionAxis
	// Mode is the runtime mode the specs are resolved in; "" means
	// sharding.ModeDecode. A cache has one layout for its whole life (its
	// committed storage is cut by it; prefill writes are cut to match it
	// rather than resharding the cache), and a serving cache spends that
	// life decoding, so the default is the generation-mode layout, with
	// PartitionAxis's decode_* overrides, as EasyDeL shards the cache it
	// decodes with. With eformer's default PartitionAxis both modes give
	// the same specs.
	Mode sharding.Mode
}

// sharded reports whether s asks for a sharded cache, and returns its
// partition axis and mode with their defaults applied, or an error naming
// a bad one.
func (s Spec) sharded() (bool, sharding.PartitionAxis, sharding.Mode, error) {
	pa, mode := sharding.DefaultPartitionAxis(), sharding.ModeDecode
	if s.PartitionAxis != nil {
		pa = s.PartitionAxis.Clone()
	}
	if s.Mode != "" {
		mode = s.Mode
	}
	if !mode.Valid() {
		return false, pa, mode, errorf(ErrInvalid, "unknown mode %q (want one of %q, %q, %q, %q)", mode,
			sharding.ModeDecode, sharding.ModePrefill, sharding.ModeInsert, sharding.ModeTrain)
	}
	if err := pa.Validate(); err != nil {
		return false, pa, mode, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if s.Mesh == nil {
		return false, pa, mode, nil
	}
	if s.Mesh.NumDevices() == 0 {
		return false, pa, mode, errorf(ErrInvalid, "the zero Mesh has no devices (build one with sharding.NewMesh)")
	}
	return s.Mesh.NumDevices() > 1, pa, mode, nil
}

// TransformerSpec describes a contiguous KV cache (transformer.InitStorage
// with Starts: every layer's rows start at Starts, all zeros when nil).
type TransformerSpec struct {
	Metadata transformer.Metadata
	DType    tensor.DType
	// Quantization and BlockSize store keys and values quantized
	// (transformer.InitStorage with transformer.Storage{DType,
	// Quantization, BlockSize}): tensor.Int8 or tensor.NF4 codes with DType
	// scales; the zero values store DType values. Every write quantizes
	// the rows it writes; an insert shares the inserted rows' codes and
	// scales as stored and refuses a view stored otherwise. On a Mesh of
	// more than one device each part view stores its rows' and kv heads'
	// codes and scales (transformer.View.Split), and each device
	// quantizes the rows it writes, so the joined view equals an
	// unsharded cache's byte for byte.
	Quantization tensor.Quantization
	BlockSize    int
	Starts       []int32
}

// Storage returns how the cache stores keys and values:
// transformer.Storage{DType, Quantization, BlockSize}.
func (t *TransformerSpec) Storage() transformer.Storage {
	return transformer.Storage{DType: t.DType, Quantization: t.Quantization, BlockSize: t.BlockSize}
}

// PagedSpec describes a paged KV cache (paged.Init) and its page manager.
type PagedSpec struct {
	Metadata paged.Metadata
	DType    tensor.DType
	// Quantization and BlockSize store the pages quantized
	// (paged.InitStorage with paged.Storage{DType, Quantization,
	// BlockSize}): tensor.Int8 or tensor.NF4 codes with DType scales; the
	// zero values store DType values. On a Mesh of more than one device
	// each part view stores its kv heads' codes and scales
	// (paged.View.Split), and each device quantizes the rows it writes, so
	// the joined pages equal an unsharded cache's byte for byte.
	Quantization tensor.Quantization
	BlockSize    int
	// Pool, when set, gives the cache a serving-grade page pool
	// (pagemanager.Pool: prefix caching, eviction, fork, KV events on the
	// event stream) instead of EasyDeL's HBMPageManager; zero NumPages and
	// PageSize are taken from Metadata.
	Pool *pagemanager.PoolConfig
}

// Storage returns how the cache stores its pages: paged.Storage{DType,
// Quantization, BlockSize}.
func (p *PagedSpec) Storage() paged.Storage {
	return paged.Storage{DType: p.DType, Quantization: p.Quantization, BlockSize: p.BlockSize}
}

// MambaSpec describes a Mamba state cache (mamba.Init).
type MambaSpec struct {
	Metadata mamba.Metadata
	DType    tensor.DType
}

// Mamba2Spec describes a Mamba2 state cache (mamba2.Init).
type Mamba2Spec struct {
	Metadata mamba2.Metadata
	DType    tensor.DType
}

// LightningSpec describes a lightning state cache (lightning.Init).
type LightningSpec struct {
	Layers   int
	Metadata lightning.Metadata
	DType    tensor.DType
}

// initialViews builds version 0's views for spec: with a mesh of more than
// one device, each view split over it (a *Sharded).
func (s Spec) initialViews() ([]any, *pagemanager.HBMPageManager, error) {
	shard, pa, mode, err := s.sharded()
	if err != nil {
		return nil, nil, err
	}
	views, pm, err := s.fullViews()
	if err != nil || !shard {
		return views, pm, err
	}
	for l, v := range views {
		if views[l], err = shardView(v, pa, mode, *s.Mesh); err != nil {
			return nil, nil, fmt.Errorf("layer %d on %s: %w", l, s.Mesh, err)
		}
	}
	return views, pm, nil
}

// fullViews builds version 0's unsharded views for spec.
func (s Spec) fullViews() ([]any, *pagemanager.HBMPageManager, error) {
	set := 0
	for _, p := range []bool{s.Transformer != nil, s.Paged != nil, s.Mamba != nil, s.Mamba2 != nil, s.Lightning != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return nil, nil, errorf(ErrInvalid, "a cache spec needs exactly one kind, got %d", set)
	}
	var views []any
	collect := func(n int, view func(i int) (any, error)) error {
		for i := range n {
			v, err := view(i)
			if err != nil {
				return err
			}
			views = append(views, v)
		}
		return nil
	}
	switch {
	case s.Transformer != nil:
		c, err := transformer.InitStorage(s.Transformer.Metadata, s.Transformer.Storage(), s.Transformer.Starts)
		if err != nil {
			return nil, nil, err
		}
		return views, nil, collect(c.Len(), func(i int) (any, error) { return c.View(i) })
	case s.Paged != nil:
		c, err := paged.InitStorage(s.Paged.Metadata, s.Paged.Storage())
		if err != nil {
			return nil, nil, err
		}
		pm, err := pagemanager.NewHBMPageManager(pagemanager.ConfigFromMetadata(s.Paged.Metadata))
		if err != nil {
			return nil, nil, err
		}
		return views, pm, collect(c.Len(), func(i int) (any, error) { return c.View(i) })
	case s.Mamba != nil:
		c, err := mamba.Init(s.Mamba.Metadata, s.Mamba.DType)
		if err != nil {
			return nil, nil, err
		}
		return views, nil, collect(c.Len(), func(i int) (any, error) { return c.View(i) })
	case s.Mamba2 != nil:
		c, err := mamba2.Init(s.Mamba2.Metadata, s.Mamba2.DType)
		if err != nil {
			return nil, nil, err
		}
		return views, nil, collect(c.Len(), func(i int) (any, error) { return c.View(i) })
	default:
		c, err := lightning.Init(s.Lightning.Layers, s.Lightning.Metadata, s.Lightning.DType)
		if err != nil {
			return nil, nil, err
		}
		return views, nil, collect(c.Len(), func(i int) (any, error) { return c.View(i) })
	}
}

// Cache is a handle on a cache hosted by a Runtime. Its methods are safe
// for concurrent use; each request waits at most the runtime's timeout (or
// the context's deadline, if earlier).
type Cache struct {
	rt     *Runtime
	id     string
	pid    *actor.PID
	layers int
}

// NewCache creates cache id, at version 0 (all layers zero or empty).
func (r *Runtime) NewCache(id string, spec Spec) (*Cache, error) {
	views, pm, err := spec.initialViews()
	if err != nil {
		return nil, fmt.Errorf("create cache %s: %w", id, err)
	}
	a := &cacheActor{id: id, cfg: r.cfg, current: Version{Views: views}, rounds: map[uint64]*round{}, txns: map[string]*txn{}, pm: pm}
	if spec.Paged != nil && spec.Paged.Pool != nil {
		cfg := *spec.Paged.Pool
		if cfg.NumPages == 0 {
			cfg.NumPages = spec.Paged.Metadata.NumPagesPerLayer
		}
		if cfg.PageSize == 0 {
			cfg.PageSize = spec.Paged.Metadata.PageSize
		}
		if a.pool, err = pagemanager.NewPool(cfg); err != nil {
			return nil, fmt.Errorf("create cache %s: %w", id, err)
		}
		a.pm = nil
	}
	a.history = []Version{a.current}
	pid, err := r.spawn(id, a)
	if err != nil {
		return nil, err
	}
	return &Cache{rt: r, id: id, pid: pid, layers: len(views)}, nil
}

// ID returns the cache's id.
func (c *Cache) ID() string { return c.id }

// Layers returns the number of layers.
func (c *Cache) Layers() int { return c.layers }

// request sends msg to pid and waits for the reply.
func (c *Cache) request(ctx context.Context, pid *actor.PID, op string, msg any) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cache %s: %s: %w", c.id, op, err)
	}
	timeout := c.rt.cfg.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	res, err := c.rt.sys.Root.RequestFuture(pid, msg, timeout).Result()
	switch {
	case errors.Is(err, actor.ErrTimeout):
		return nil, errorf(ErrTimeout, "cache %s: %s: no reply within %v", c.id, op, timeout)
	case errors.Is(err, actor.ErrDeadLetter):
		return nil, errorf(ErrClosed, "cache %s: %s: the cache is closed", c.id, op)
	case err != nil:
		return nil, errorf(ErrInternal, "cache %s: %s: %v", c.id, op, err)
	}
	return res, nil
}

// Step writes every listed layer on top of version base, fanned out to the
// layer actors concurrently, and publishes version base+1 atomically. It
// returns the new version number and one Result per write, in order. If any
// layer fails, the step fails as a whole and base stays current; if another
// step published first, it fails with ErrStale (never merged).
func (c *Cache) Step(ctx context.Context, base uint64, writes []LayerWrite) (_ uint64, _ []Result, err error) {
	defer c.observe("step", time.Now(), &err)
	res, err := c.request(ctx, c.pid, "step", &stepRequest{base: base, writes: writes})
	if err != nil {
		return 0, nil, err
	}
	r := res.(*stepReply)
	if err := errorOf(r.status); err != nil {
		return r.version, nil, err
	}
	return r.version, r.results, nil
}

// Snapshot returns published version number, if the cache still keeps it.
func (c *Cache) Snapshot(ctx context.Context, number uint64) (Version, error) {
	return c.version(ctx, "snapshot", &snapshotRequest{number: number})
}

// Current returns the current version.
func (c *Cache) Current(ctx context.Context) (Version, error) {
	return c.version(ctx, "current", &snapshotRequest{latest: true})
}

func (c *Cache) version(ctx context.Context, op string, msg any) (_ Version, err error) {
	defer c.observe(op, time.Now(), &err)
	res, err := c.request(ctx, c.pid, op, msg)
	if err != nil {
		return Version{}, err
	}
	r := res.(*versionReply)
	return r.version, errorOf(r.status)
}

// Insert puts other's rows (a prefilled cache, one view per layer) into
// batch slots [slot, slot+B') of every layer on top of version base, sharing
// their storage, and publishes base+1. Contiguous caches only. The rows
// must be stored as the cache stores its own (transformer.Storage: dtype,
// quantization, NF4 block): quantized rows go in as stored, codes and
// scales, and a view stored otherwise is refused (ErrIncompatible naming
// both storages), never converted.
func (c *Cache) Insert(ctx context.Context, base uint64, slot int, other transformer.Cache) (uint64, error) {
	if other.Len() != c.layers {
		return 0, errorf(ErrInvalid, "cache %s: insert of a cache of %d layers into %d layers", c.id, other.Len(), c.layers)
	}
	writes := make([]LayerWrite, c.layers)
	for l := range writes {
		v, err := other.View(l)
		if err != nil {
			return 0, err
		}
		writes[l] = LayerWrite{Layer: l, Write: &InsertWrite{Slot: slot, Other: v}}
	}
	v, _, err := c.Step(ctx, base, writes)
	return v, err
}

// Close stops the cache's actors. Requests afterwards fail with ErrClosed.
func (c *Cache) Close() error {
	pid, ok := c.rt.forget(c.id)
	if !ok {
		return errorf(ErrNotFound, "cache %s is not open", c.id)
	}
	_ = c.rt.sys.Root.StopFuture(pid).Wait()
	c.rt.meters.Forget(c.id)
	return nil
}

// observe records an API call's duration and outcome, with op's spaces
// as underscores ("write layer" → "write_layer").
func (c *Cache) observe(op string, start time.Time, err *error) {
	if c.rt.meters == nil {
		return
	}
	c.rt.meters.Request(c.id, strings.ReplaceAll(op, " ", "_"), start, Code(*err))
}

// Txn is a per-layer transaction: a model that produces K/V layer by layer
// writes each layer with WriteLayer (which returns what attention needs),
// then publishes all of them at once with Commit, or drops them with Abort.
type Txn struct {
	c    *Cache
	id   string
	base uint64
}

// Begin opens a transaction on version base.
func (c *Cache) Begin(ctx context.Context, base uint64) (_ *Txn, err error) {
	defer c.observe("begin", time.Now(), &err)
	res, err := c.request(ctx, c.pid, "begin", &beginRequest{base: base})
	if err != nil {
		return nil, err
	}
	r := res.(*beginReply)
	if err := errorOf(r.status); err != nil {
		return nil, err
	}
	return &Txn{c: c, id: r.txn, base: base}, nil
}

// WriteLayer stages one layer's write and returns its Result (for a
// contiguous cache the full key, value and mask). Writing a layer again
// builds on the staged view.
func (t *Txn) WriteLayer(ctx context.Context, layer int, w Write) (_ Result, err error) {
	defer t.c.observe("write layer", time.Now(), &err)
	res, err := t.c.request(ctx, t.c.pid, "write layer", &stepRequest{txn: t.id, writes: []LayerWrite{{Layer: layer, Write: w}}})
	if err != nil {
		return Result{}, err
	}
	r := res.(*stepReply)
	if err := errorOf(r.status); err != nil {
		return Result{}, err
	}
	return r.results[0], nil
}

// Commit publishes the staged layers as version base+1 (unwritten layers
// keep their views); it fails with ErrStale if another version was
// published since Begin.
func (t *Txn) Commit(ctx context.Context) (uint64, error) {
	v, err := t.c.version(ctx, "commit", &commitRequest{txn: t.id})
	return v.Number, err
}

// Abort drops the staged layers.
func (t *Txn) Abort(ctx context.Context) error {
	_, err := t.c.version(ctx, "abort", &abortRequest{txn: t.id})
	return err
}
