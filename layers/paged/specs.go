package paged

import (
	"errors"
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
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

// SplitStored cuts stored rows (GatherStored's, for WriteStored) of a
// view of meta by TokenSpecs into one Stored per device, in device order,
// as SplitTokens cuts a prefill chunk: the values, or the codes and the
// scales of quantized rows, by kv heads (and head dim, where the specs cut
// it and the storage allows it, see Split). Device i applies its Stored,
// with the step's StepMetadata unchanged, to its view of Split; joined,
// the views equal the unsharded WriteStored's byte for byte. Rows whose
// tensors do not fit the specs, or quantized rows the specs would cut
// within a row, wrap ErrSharding.
func (s Specs) SplitStored(rows Stored, meta Metadata, mesh sharding.Mesh) ([]Stored, error) {
	if err := rows.Storage.Validate(); err != nil {
		return nil, err
	}
	if err := s.checkStorage(rows.Storage, meta, mesh); err != nil {
		return nil, err
	}
	ks, vs := s.TokenSpecs()
	n := mesh.NumDevices()
	out := make([]Stored, n)
	for i := range out {
		out[i].Storage = rows.Storage
	}
	quantized := rows.Storage.Quantization != tensor.None
	for _, c := range []struct {
		name  string
		t     tensor.Tensor
		spec  sharding.Spec
		want  bool
		field func(o *Stored) *tensor.Tensor
	}{
		{"key", rows.Key, ks, true, func(o *Stored) *tensor.Tensor { return &o.Key }},
		{"value", rows.Value, vs, true, func(o *Stored) *tensor.Tensor { return &o.Value }},
		{"key scales", rows.KeyScales, ks, quantized, func(o *Stored) *tensor.Tensor { return &o.KeyScales }},
		{"value scales", rows.ValueScales, vs, quantized, func(o *Stored) *tensor.Tensor { return &o.ValueScales }},
	} {
		if !c.want {
			if !c.t.IsZero() {
				return nil, fmt.Errorf("%w: stored rows as %s carry %s %s (unquantized rows have none)", ErrSharding, rows.Storage, c.name, c.t)
			}
			continue
		}
		if c.t.IsZero() {
			return nil, fmt.Errorf("%w: stored rows as %s: %s is absent", ErrSharding, rows.Storage, c.name)
		}
		ts, err := sharding.Split(c.t, c.spec, mesh)
		if err != nil {
			return nil, fmt.Errorf("%w: stored %s: %w", ErrSharding, c.name, err)
		}
		for i := range out {
			*c.field(&out[i]) = ts[i]
		}
	}
	return out, nil
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

// checkStorage checks that a view stored as st can be cut by s over mesh
// (after shardMeta accepted s): its quantized rows keep their codes and
// scales whole on every shard (kvquant.Format.CheckCut). Codes and scales
// are then cut by the pages' specs, as the values would be.
func (s Specs) checkStorage(st Storage, meta Metadata, mesh sharding.Mesh) error {
	st = st.resolved()
	f, err := kvquant.NewFormat(st.DType, st.Quantization, st.BlockSize, meta.KVHeadDimSize)
	if err != nil {
		return fmt.Errorf("%w: %w: %v", ErrSharding, ErrQuantization, err)
	}
	if err := f.CheckCut(s.KeyPages[3].Blocks(mesh)); err != nil {
		return fmt.Errorf("%w: pages stored as %s: key pages spec %s: %v", ErrSharding, st, s.KeyPages, err)
	}
	return nil
}

// pools are a view's page tensors in stored form: the values, or the
// codes and the scales of a quantized view.
type pools struct {
	key, value, keyScales, valueScales tensor.Tensor
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slices of the key and value pages, with metadata
// sized to them (num_kv_heads and kv_head_dim_size divided by their block
// counts), v's storage and v's layer index. Applying a write (WritePrefill,
// WriteDecodes) to every shard view, with its tokens cut by SplitTokens and
// the same StepMetadata, then JoinViews, gives the unsharded write's view
// byte for byte: page tables and positions are the same on every shard,
// and each head's pages are written independently.
//
// A quantized view (int8 or NF4, see Storage) is cut in stored form: the
// codes and the scales are cut by the same specs as the values would be,
// and each shard quantizes the rows it writes exactly as the unsharded
// view does (the rows of a head are whole on one shard). The head dim may
// be cut only where the stored rows allow it (kvquant's CheckCut): never
// for int8 (one scale per row), and for NF4 only when the block divides
// the shard's head dim (and that is even); otherwise the error wraps
// ErrSharding and names the block and the shard width.
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
	st := v.Storage()
	if err := s.checkStorage(st, v.meta, mesh); err != nil {
		return nil, err
	}
	ks, vs := v.stores()
	n := mesh.NumDevices()
	keys, keyScales, err := kvquant.SplitStore(ks, "key pages", "key scales", s.KeyPages, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSharding, err)
	}
	values, valueScales, err := kvquant.SplitStore(vs, "value pages", "value scales", s.ValuePages, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSharding, err)
	}
	parts := make([]pools, n)
	for i := range parts {
		parts[i].key, parts[i].value = keys[i], values[i]
		if keyScales != nil {
			parts[i].keyScales = keyScales[i]
		}
		if valueScales != nil {
			parts[i].valueScales = valueScales[i]
		}
	}
	out := make([]View, n)
	for i := range out {
		if out[i], err = viewOfPools(sm, st, v.layer, parts[i]); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", ErrSharding, i, err)
		}
	}
	return out, nil
}

// viewOfPools returns the view of meta, st and layer whose pages hold p
// (in st's stored form), shared when a tensor already has the pool
// layout, else copied into a fresh pool (chunks of zeros stay
// unallocated).
func viewOfPools(meta Metadata, st Storage, layer int, p pools) (View, error) {
	if err := st.Validate(); err != nil {
		return View{}, err
	}
	if layer < 0 || layer >= meta.NumHiddenLayers {
		return View{}, fmt.Errorf("%w: layer %d of %d layers", ErrOutOfRange, layer, meta.NumHiddenLayers)
	}
	st = st.resolved()
	f, err := kvquant.NewFormat(st.DType, st.Quantization, st.BlockSize, meta.KVHeadDimSize)
	if err != nil {
		return View{}, fmt.Errorf("%w: %v", ErrQuantization, err)
	}
	key, err := kvquant.Assemble(f, poolLayout(meta), poolShape(meta), p.key, p.keyScales, true)
	if err != nil {
		return View{}, fmt.Errorf("%w: key pages: %v", ErrShape, err)
	}
	value, err := kvquant.Assemble(f, poolLayout(meta), poolShape(meta), p.value, p.valueScales, true)
	if err != nil {
		return View{}, fmt.Errorf("%w: value pages: %v", ErrShape, err)
	}
	v := View{meta: meta, layer: layer}
	if st.Quantization != tensor.None {
		v.quant = &quantized{st: st, f: f}
	}
	return v.withStores(key, value), nil
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// the key and value pages are joined (sharding.Join), the codes and the
// scales of quantized views alike, and the views must agree on storage
// (dtype, quantization, NF4 block) and layer index. Replicas must hold the
// same bytes (codes and scales included); shard views whose shapes do not
// fit s and meta, or replicas that differ, give an error wrapping
// ErrSharding (and sharding.ErrReplicaMismatch for the latter) that names
// the device.
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
	n := len(parts)
	keys, values := make([]tensor.Tensor, n), make([]tensor.Tensor, n)
	keyScales, valueScales := make([]tensor.Tensor, n), make([]tensor.Tensor, n)
	for i, p := range parts {
		if p.IsZero() {
			return View{}, fmt.Errorf("%w: shard view %d is absent", ErrSharding, i)
		}
		if p.DType() != parts[0].DType() {
			return View{}, fmt.Errorf("%w: shard view %d is %s, shard view 0 is %s", ErrSharding, i, p.DType(), parts[0].DType())
		}
		if p.Storage() != parts[0].Storage() {
			return View{}, fmt.Errorf("%w: shard view %d is stored as %s, shard view 0 as %s", ErrSharding, i, p.Storage(), parts[0].Storage())
		}
		if p.layer != parts[0].layer {
			return View{}, fmt.Errorf("%w: shard view %d has layer index %d, shard view 0 has %d", ErrSharding, i, p.layer, parts[0].layer)
		}
		ks, vs := p.stores()
		keys[i], values[i], keyScales[i], valueScales[i] = ks.Data, vs.Data, ks.Scales, vs.Scales
	}
	st := parts[0].Storage()
	if err := s.checkStorage(st, meta, mesh); err != nil {
		return View{}, err
	}
	f, err := kvquant.NewFormat(st.DType, st.Quantization, st.BlockSize, meta.KVHeadDimSize)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w: %v", ErrSharding, ErrQuantization, err)
	}
	shape := poolShape(meta)
	dataShape, scalesShape := slices.Clone(shape), slices.Clone(shape)
	dataShape[3], scalesShape[3] = f.DataPerRow(), f.ScalesPerRow()
	var full pools
	for _, c := range []struct {
		name  string
		ts    []tensor.Tensor
		spec  sharding.Spec
		shape []int
		dst   *tensor.Tensor
	}{
		{"key pages", keys, s.KeyPages, dataShape, &full.key},
		{"value pages", values, s.ValuePages, dataShape, &full.value},
		{"key scales", keyScales, s.KeyPages, scalesShape, &full.keyScales},
		{"value scales", valueScales, s.ValuePages, scalesShape, &full.valueScales},
	} {
		if !f.Quantized() && c.ts[0].IsZero() {
			continue // unquantized views have no scales
		}
		if *c.dst, err = sharding.Join(c.ts, c.spec, mesh, c.shape); err != nil {
			return View{}, fmt.Errorf("%w: %s: %w", ErrSharding, c.name, err)
		}
	}
	return viewOfPools(meta, st, parts[0].layer, full)
}
