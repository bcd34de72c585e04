package paged

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// ErrSharding reports partition specs that do not fit a view or a mesh, or
// that shard an axis a shard view cannot express, and shard views that do
// not join.
var ErrSharding = errors.New("paged: bad sharding")

// PageAxes returns the semantic axes of the key and value pages, shape
// (Hkv, N, ps, D): [HEAD, _, _, _], as EasyDeL's PagedAttentionCacheView
// shards them (sharding.PagedPageAxes): the kv heads over the head axis
// (tp), the rest replicated.
func PageAxes() []string { return sharding.PagedPageAxes() }

// Specs are the partition specs of one view's page tensors on a mesh:
// PageAxes resolved with a PartitionAxis in a mode and corrected for the
// pool's shape (sharding.ResolveFor). When the head axis's size does not
// divide num_kv_heads (in particular kv_heads < tp), the correction
// replicates the pages, as EasyDeL does.
type Specs struct {
	// KeyPages is the spec of the key pages (Hkv, N, ps, D).
	KeyPages sharding.Spec
	// ValuePages is the spec of the value pages (Hkv, N, ps, D).
	ValuePages sharding.Spec
}

// Specs returns the specs of v's page tensors: PageAxes resolved by pa in
// mode and corrected for the pool's shape on mesh. An absent view wraps
// ErrAbsentView; an unknown mode or an invalid pa wraps ErrSharding and the
// sharding error.
func (v View) Specs(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (Specs, error) {
	if err := v.checkPresent(); err != nil {
		return Specs{}, err
	}
	shape := poolShape(v.meta)
	k, err := sharding.ResolveFor(pa, PageAxes(), mode, shape, mesh)
	if err != nil {
		return Specs{}, fmt.Errorf("%w: key pages: %w", ErrSharding, err)
	}
	val, err := sharding.ResolveFor(pa, PageAxes(), mode, shape, mesh)
	if err != nil {
		return Specs{}, fmt.Errorf("%w: value pages: %w", ErrSharding, err)
	}
	return Specs{KeyPages: k, ValuePages: val}, nil
}

// poolShape returns the shape of meta's page tensors.
func poolShape(m Metadata) []int {
	return []int{m.NumKVHeads, m.NumPagesPerLayer, m.PageSize, m.KVHeadDimSize}
}

// TokenSpecs returns the specs of a write's new key and value tokens
// (T, Hkv, D) of WritePrefill or (Bd, Hkv, D) of WriteDecodes: the token
// axis replicated (every head shard writes every token, through the same
// page tables), the heads and head dim cut as the pages' are.
func (s Specs) TokenSpecs() (key, value sharding.Spec) {
	return s.KeyPages.Pick(-1, 0, 3), s.ValuePages.Pick(-1, 0, 3)
}

// SplitTokens cuts a write's new key and value tokens ((T, Hkv, D) or
// (Bd, Hkv, D)) by TokenSpecs into one pair per device, in device order:
// device i applies keys[i] and values[i], with the step's StepMetadata
// unchanged (positions and page tables are replicated), to its view of
// Split. Shapes that do not fit the specs wrap ErrSharding.
func (s Specs) SplitTokens(key, value tensor.Tensor, mesh sharding.Mesh) (keys, values []tensor.Tensor, err error) {
	ks, vs := s.TokenSpecs()
	if keys, err = sharding.Split(key, ks, mesh); err != nil {
		return nil, nil, fmt.Errorf("%w: new key: %w", ErrSharding, err)
	}
	if values, err = sharding.Split(value, vs, mesh); err != nil {
		return nil, nil, fmt.Errorf("%w: new value: %w", ErrSharding, err)
	}
	return keys, values, nil
}

// shardMeta checks that s fits meta's pools on mesh and that a shard view
// can hold each device's slices, and returns a shard's metadata:
// num_kv_heads and kv_head_dim_size divided by their block counts, the
// rest (the pool size, the page size, the page tables' length) unchanged.
func (s Specs) shardMeta(meta Metadata, mesh sharding.Mesh) (Metadata, error) {
	shape := poolShape(meta)
	for _, c := range []struct {
		name string
		spec sharding.Spec
	}{{"key pages", s.KeyPages}, {"value pages", s.ValuePages}} {
		if _, err := sharding.ShardSlices(shape, c.spec, mesh); err != nil {
			return Metadata{}, fmt.Errorf("%w: %s spec %s for shape %v: %w", ErrSharding, c.name, c.spec, shape, err)
		}
		for _, a := range []struct {
			axis int
			what string
		}{{1, fmt.Sprintf("the page axis (num_pages_per_layer %d): page tables index the whole pool", meta.NumPagesPerLayer)},
			{2, fmt.Sprintf("the page-offset axis (page_size %d): a page's tokens stay together", meta.PageSize)}} {
			if k := c.spec[a.axis].Blocks(mesh); k > 1 {
				return Metadata{}, fmt.Errorf("%w: %s spec %s cuts %s into %d blocks over %s, which a shard view cannot express",
					ErrSharding, c.name, c.spec, a.what, k, c.spec[a.axis])
			}
		}
	}
	if !s.KeyPages.Pick(0, 3).Equal(s.ValuePages.Pick(0, 3)) {
		return Metadata{}, fmt.Errorf("%w: key pages spec %s and value pages spec %s cut the heads or head dim differently; a shard view has one num_kv_heads and kv_head_dim_size",
			ErrSharding, s.KeyPages, s.ValuePages)
	}
	m := meta
	m.NumKVHeads /= s.KeyPages[0].Blocks(mesh)
	m.KVHeadDimSize /= s.KeyPages[3].Blocks(mesh)
	return m, nil
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slices of the key and value pages, with metadata
// sized to them (num_kv_heads and kv_head_dim_size divided by their block
// counts) and v's layer index. Applying a write (WritePrefill,
// WriteDecodes) to every shard view, with its tokens cut by SplitTokens and
// the same StepMetadata, then JoinViews, gives the unsharded write's view
// byte for byte: page tables and positions are the same on every shard,
// and each head's pages are written independently.
//
// The specs must fit v's pool as it stands (use View.Specs), cut the key
// and value pages alike, and leave the page and page-offset axes whole;
// otherwise the error wraps ErrSharding and names the spec. Slices covering
// a whole pool share v's storage; the others are copied into fresh pools
// (pages that hold only zeros stay unallocated, as in a fresh pool).
func (v View) Split(s Specs, mesh sharding.Mesh) ([]View, error) {
	if err := v.checkPresent(); err != nil {
		return nil, err
	}
	sm, err := s.shardMeta(v.meta, mesh)
	if err != nil {
		return nil, err
	}
	keys, err := sharding.Split(v.key, s.KeyPages, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: key pages: %w", ErrSharding, err)
	}
	values, err := sharding.Split(v.value, s.ValuePages, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: value pages: %w", ErrSharding, err)
	}
	out := make([]View, len(keys))
	for i := range out {
		if out[i], err = viewOfPools(sm, v.layer, keys[i], values[i]); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", ErrSharding, i, err)
		}
	}
	return out, nil
}

// viewOfPools returns the view of meta and layer whose pages hold key and
// value, shared when they already have the pool layout, else copied into a
// fresh pool.
func viewOfPools(meta Metadata, layer int, key, value tensor.Tensor) (View, error) {
	if key.DType() != value.DType() {
		return View{}, fmt.Errorf("%w: key pages are %s, value pages %s", ErrDType, key.DType(), value.DType())
	}
	v, err := NewView(meta, key.DType(), layer)
	if err != nil {
		return View{}, err
	}
	if v.key, err = intoPool(v.key, key); err != nil {
		return View{}, fmt.Errorf("key pages: %w", err)
	}
	if v.value, err = intoPool(v.value, value); err != nil {
		return View{}, fmt.Errorf("value pages: %w", err)
	}
	return v, nil
}

// intoPool returns src when it has pool's shape and chunk layout, else pool
// with every chunk of src that is not all zeros written into it.
func intoPool(pool, src tensor.Tensor) (tensor.Tensor, error) {
	if !src.HasShape(pool.Shape()...) {
		return tensor.Tensor{}, fmt.Errorf("%w: pages have shape %v, want %v", ErrShape, src.Shape(), pool.Shape())
	}
	if src.ChunkLen() == pool.ChunkLen() {
		return src, nil
	}
	ce := pool.ChunkLen()
	es := pool.DType().Size()
	buf := make([]byte, ce*es)
	zero := make([]byte, ce*es)
	e := pool.Edit()
	for c := range pool.NumChunks() {
		if err := src.ReadBytes(buf, pool.DType(), c*ce); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%w: %w", ErrShape, err)
		}
		if bytes.Equal(buf, zero) {
			continue
		}
		if err := e.Write(c*ce, src, c*ce, ce); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%w: %w", ErrShape, err)
		}
	}
	return e.Tensor(), nil
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// the key and value pages are joined (sharding.Join), and the views must
// agree on dtype and layer index. Replicas must hold the same bytes; shard
// views whose shapes do not fit s and meta, or replicas that differ, give
// an error wrapping ErrSharding (and sharding.ErrReplicaMismatch for the
// latter) that names the device.
func JoinViews(parts []View, meta Metadata, s Specs, mesh sharding.Mesh) (View, error) {
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	if _, err := s.shardMeta(meta, mesh); err != nil {
		return View{}, err
	}
	if len(parts) != mesh.NumDevices() {
		return View{}, fmt.Errorf("%w: %d shard views for a mesh of %d devices", ErrSharding, len(parts), mesh.NumDevices())
	}
	keys, values := make([]tensor.Tensor, len(parts)), make([]tensor.Tensor, len(parts))
	for i, p := range parts {
		if p.IsZero() {
			return View{}, fmt.Errorf("%w: shard view %d is absent", ErrSharding, i)
		}
		if p.DType() != parts[0].DType() {
			return View{}, fmt.Errorf("%w: shard view %d is %s, shard view 0 is %s", ErrSharding, i, p.DType(), parts[0].DType())
		}
		if p.layer != parts[0].layer {
			return View{}, fmt.Errorf("%w: shard view %d has layer index %d, shard view 0 has %d", ErrSharding, i, p.layer, parts[0].layer)
		}
		keys[i], values[i] = p.key, p.value
	}
	shape := poolShape(meta)
	key, err := sharding.Join(keys, s.KeyPages, mesh, shape)
	if err != nil {
		return View{}, fmt.Errorf("%w: key pages: %w", ErrSharding, err)
	}
	value, err := sharding.Join(values, s.ValuePages, mesh, shape)
	if err != nil {
		return View{}, fmt.Errorf("%w: value pages: %w", ErrSharding, err)
	}
	return viewOfPools(meta, parts[0].layer, key, value)
}
