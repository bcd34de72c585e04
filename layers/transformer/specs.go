package transformer

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
var ErrSharding = errors.New("transformer: bad sharding")

// KVAxes returns the semantic axes of the key and value caches, shape
// (B, S, H, D): [BATCH, KV_LENGTH, KV_HEAD, KV_HEAD_DIM], as EasyDeL's
// TransformerCacheView shards them (sharding.TransformerKVAxes).
func KVAxes() []string { return sharding.TransformerKVAxes() }

// IndexAxes returns the semantic axes of index and starts, shape (B,):
// [BATCH] (sharding.TransformerIndexAxes).
func IndexAxes() []string { return sharding.TransformerIndexAxes() }

// Specs are the partition specs of one view's tensors on a mesh: KVAxes and
// IndexAxes resolved with a PartitionAxis in a mode and corrected for the
// view's shapes (sharding.ResolveFor), so an axis whose mesh axes are not in
// the mesh or do not divide it is replicated, as EasyDeL's
// apply_logical_sharding does.
type Specs struct {
	// Key is the spec of the key cache (B, S, key_heads, key_dim).
	Key sharding.Spec
	// Value is the spec of the value cache (B, S, value_heads, value_dim).
	Value sharding.Spec
	// Index is the spec of the per-row write positions (B,).
	Index sharding.Spec
	// Starts is the spec of the per-row first valid positions (B,).
	Starts sharding.Spec
}

// Specs returns the specs of v's tensors: KVAxes and IndexAxes resolved by pa
// in mode and corrected for v's shapes on mesh. An empty view wraps
// ErrEmpty; an unknown mode or an invalid pa wraps ErrSharding and the
// sharding error.
func (v View) Specs(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (Specs, error) {
	if v.IsEmpty() {
		return Specs{}, fmt.Errorf("%w: Specs of an empty view", ErrEmpty)
	}
	m := v.meta
	var s Specs
	for _, c := range []struct {
		name  string
		dst   *sharding.Spec
		axes  []string
		shape []int
	}{
		{"key", &s.Key, KVAxes(), []int{m.BatchSize, m.SequenceLength, m.KeyHeads, m.KeyDim}},
		{"value", &s.Value, KVAxes(), []int{m.BatchSize, m.SequenceLength, m.ValueHeads, m.ValueDim}},
		{"index", &s.Index, IndexAxes(), []int{m.BatchSize}},
		{"starts", &s.Starts, IndexAxes(), []int{m.BatchSize}},
	} {
		spec, err := sharding.ResolveFor(pa, c.axes, mode, c.shape, mesh)
		if err != nil {
			return Specs{}, fmt.Errorf("%w: %s: %w", ErrSharding, c.name, err)
		}
		*c.dst = spec
	}
	return s, nil
}

// WriteSpecs returns the specs of a write's new key and value vectors
// (B, q, H, D) (Append, ConcatenateToCache): Key and Value with the token
// axis replicated, since each shard of a row takes all q new tokens.
func (s Specs) WriteSpecs() (key, value sharding.Spec) {
	return s.Key.Pick(0, -1, 2, 3), s.Value.Pick(0, -1, 2, 3)
}

// SplitWrite cuts a write's new key and value vectors (B, q, H, D) by
// WriteSpecs into one pair per device, in device order: device i applies
// keys[i] and values[i] to its view of Split (Append or
// ConcatenateToCache). Shapes that do not fit the specs wrap ErrSharding.
func (s Specs) SplitWrite(key, value tensor.Tensor, mesh sharding.Mesh) (keys, values []tensor.Tensor, err error) {
	ks, vs := s.WriteSpecs()
	if keys, err = sharding.Split(key, ks, mesh); err != nil {
		return nil, nil, fmt.Errorf("%w: new key: %w", ErrSharding, err)
	}
	if values, err = sharding.Split(value, vs, mesh); err != nil {
		return nil, nil, fmt.Errorf("%w: new value: %w", ErrSharding, err)
	}
	return keys, values, nil
}

// batchSpec is the rank-1 spec of anything indexed by the batch row.
func (s Specs) batchSpec() sharding.Spec { return s.Index.Pick(0) }

// SplitMask cuts a mask whose leading axis is the batch (an attention mask
// (B, S) or (B, 1, q|1, S), a causal mask (B, 1, Lr, Lc)) into one mask per
// device by the batch entry of Index. The zero Mask and a mask whose
// leading axis is 1 (a causal mask shared by every row) go to every device
// whole.
func (s Specs) SplitMask(m Mask, mesh sharding.Mesh) ([]Mask, error) {
	out := make([]Mask, mesh.NumDevices())
	if m.IsZero() {
		return out, nil
	}
	if err := m.valid(); err != nil {
		return nil, fmt.Errorf("%w: split mask: %w", ErrSharding, err)
	}
	if m.Rank() == 0 {
		return nil, fmt.Errorf("%w: split mask: a rank-0 mask has no batch axis", ErrSharding)
	}
	if m.Shape[0] == 1 {
		for i := range out {
			out[i] = Mask{Shape: slices.Clone(m.Shape), Data: slices.Clone(m.Data)}
		}
		return out, nil
	}
	rowLen := len(m.Data) / max(m.Shape[0], 1)
	rows := make([][]bool, m.Shape[0])
	for b := range rows {
		rows[b] = m.Data[b*rowLen : (b+1)*rowLen]
	}
	parts, err := sharding.SplitValues(rows, s.batchSpec(), mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: split mask of shape %v: %w", ErrSharding, m.Shape, err)
	}
	for i, p := range parts {
		shape := append([]int{len(p)}, m.Shape[1:]...)
		data := make([]bool, 0, len(p)*rowLen)
		for _, r := range p {
			data = append(data, r...)
		}
		out[i] = Mask{Shape: shape, Data: data}
	}
	return out, nil
}

// SplitOptions cuts ConcatOptions into one per device: CausalMask by
// SplitMask and TokenTypeIDs by rows, along the batch entry of Index.
func (s Specs) SplitOptions(o ConcatOptions, mesh sharding.Mesh) ([]ConcatOptions, error) {
	masks, err := s.SplitMask(o.CausalMask, mesh)
	if err != nil {
		return nil, err
	}
	out := make([]ConcatOptions, len(masks))
	for i := range out {
		out[i].CausalMask = masks[i]
	}
	if o.TokenTypeIDs != nil {
		tt, err := sharding.SplitValues(o.TokenTypeIDs, s.batchSpec(), mesh)
		if err != nil {
			return nil, fmt.Errorf("%w: token_type_ids: %w", ErrSharding, err)
		}
		for i := range out {
			out[i].TokenTypeIDs = tt[i]
		}
	}
	return out, nil
}

// shardMeta checks that s fits meta's tensors on mesh and that a shard view
// can hold each device's slices, and returns a shard's metadata: the batch,
// heads and head dims divided by their block counts. The optional create
// arguments NumHeads and HeadDim are dropped (nil): the resolved KeyHeads,
// ValueHeads, KeyDim and ValueDim describe the shard.
func (s Specs) shardMeta(meta Metadata, mesh sharding.Mesh) (Metadata, error) {
	m := meta
	for _, c := range []struct {
		name  string
		spec  sharding.Spec
		shape []int
	}{
		{"key", s.Key, []int{m.BatchSize, m.SequenceLength, m.KeyHeads, m.KeyDim}},
		{"value", s.Value, []int{m.BatchSize, m.SequenceLength, m.ValueHeads, m.ValueDim}},
		{"index", s.Index, []int{m.BatchSize}},
		{"starts", s.Starts, []int{m.BatchSize}},
	} {
		if _, err := sharding.ShardSlices(c.shape, c.spec, mesh); err != nil {
			return Metadata{}, fmt.Errorf("%w: %s spec %s for shape %v: %w", ErrSharding, c.name, c.spec, c.shape, err)
		}
		if len(c.shape) == 4 {
			if k := c.spec[1].Blocks(mesh); k > 1 {
				return Metadata{}, fmt.Errorf("%w: %s spec %s cuts the kv length axis (sequence_length %d) into %d blocks over %s; a shard view holds whole rows of positions",
					ErrSharding, c.name, c.spec, m.SequenceLength, k, c.spec[1])
			}
		}
	}
	batch := s.Key.Pick(0)
	for _, c := range []struct {
		name string
		spec sharding.Spec
	}{{"value", s.Value}, {"index", s.Index}, {"starts", s.Starts}} {
		if !c.spec.Pick(0).Equal(batch) {
			return Metadata{}, fmt.Errorf("%w: the key spec cuts the batch over %s but the %s spec over %s; a shard view's key, value, index and starts hold the same rows",
				ErrSharding, s.Key[0], c.name, c.spec[0])
		}
	}
	m.NumHeads, m.HeadDim = nil, nil
	m.BatchSize /= s.Key[0].Blocks(mesh)
	m.KeyHeads /= s.Key[2].Blocks(mesh)
	m.KeyDim /= s.Key[3].Blocks(mesh)
	m.ValueHeads /= s.Value[2].Blocks(mesh)
	m.ValueDim /= s.Value[3].Blocks(mesh)
	return m, nil
}

// checkStorage checks that a view of meta stored as st can be cut by s
// over mesh (after shardMeta accepted s): its quantized rows keep their
// codes and scales whole on every shard (kvquant.Format.CheckCut). Codes
// and scales are then cut by the key and value specs, as the values would
// be. It returns the full view's key and value formats.
func (s Specs) checkStorage(st Storage, meta Metadata, mesh sharding.Mesh) (kf, vf kvquant.Format, err error) {
	st = st.resolved()
	if kf, vf, err = st.formats(meta); err != nil {
		return kf, vf, fmt.Errorf("%w: %w", ErrSharding, err)
	}
	if err := kf.CheckCut(s.Key[3].Blocks(mesh)); err != nil {
		return kf, vf, fmt.Errorf("%w: key stored as %s: key spec %s: %v", ErrSharding, st, s.Key, err)
	}
	if err := vf.CheckCut(s.Value[3].Blocks(mesh)); err != nil {
		return kf, vf, fmt.Errorf("%w: value stored as %s: value spec %s: %v", ErrSharding, st, s.Value, err)
	}
	return kf, vf, nil
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slices of key, value, index and starts, with
// metadata sized to them (batch, heads and head dims divided by their block
// counts; NumHeads and HeadDim dropped, see JoinViews for the way back),
// v's storage and v's layer index. Applying a write to every shard view,
// with its inputs cut by SplitWrite (and SplitMask, SplitOptions), then
// JoinViews, gives the unsharded write's view byte for byte: the writes are
// row- and element-wise, and replicas perform the same write.
//
// A quantized view (int8 or NF4, see Storage) is cut in stored form: the
// codes and the scales are cut by the key and value specs, as the values
// would be, and each shard quantizes the rows it writes exactly as the
// unsharded view does (every (b, s, h) row is whole on one shard). The
// head dim may be cut only where the stored rows allow it (kvquant's
// CheckCut): never for int8 (one scale per row), and for NF4 only when the
// block divides the shard's head dim (and that is even); otherwise the
// error wraps ErrSharding and names the block and the shard width.
//
// The specs must fit v's shapes as they stand (use View.Specs); the key,
// value, index and starts specs must cut the batch alike, and neither key
// nor value may cut the kv length (KV_LENGTH over sp): a shard view holds
// whole rows of positions, written at its rows' own index. Otherwise the
// error wraps ErrSharding and names the spec. Slices covering a whole tensor
// share v's storage; the others are copies.
func (v View) Split(s Specs, mesh sharding.Mesh) ([]View, error) {
	if v.IsEmpty() {
		return nil, fmt.Errorf("%w: Split of an empty view", ErrEmpty)
	}
	sm, err := s.shardMeta(v.meta, mesh)
	if err != nil {
		return nil, err
	}
	st := v.Storage()
	if _, _, err := s.checkStorage(st, v.meta, mesh); err != nil {
		return nil, err
	}
	var layer *int
	if l, ok := v.LayerIndex(); ok {
		layer = &l
	}
	n := mesh.NumDevices()
	out := make([]PureView, n)
	for i := range out {
		out[i] = PureView{LayerIndex: layer, BlockSize: st.BlockSize}
	}
	ks, vs := v.stores()
	keys, keyScales, err := kvquant.SplitStore(ks, "key", "key scales", s.Key, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSharding, err)
	}
	values, valueScales, err := kvquant.SplitStore(vs, "value", "value scales", s.Value, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSharding, err)
	}
	for i := range out {
		out[i].Key, out[i].Value = keys[i], values[i]
		if keyScales != nil {
			out[i].KeyScales = keyScales[i]
		}
		if valueScales != nil {
			out[i].ValueScales = valueScales[i]
		}
	}
	index, err := sharding.SplitValues(v.index, s.Index, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: index: %w", ErrSharding, err)
	}
	starts, err := sharding.SplitValues(v.starts, s.Starts, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: starts: %w", ErrSharding, err)
	}
	views := make([]View, n)
	for i, pv := range out {
		pv.Index, pv.Starts = index[i], starts[i]
		if views[i], err = fromParts(sm, pv); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", ErrSharding, i, err)
		}
	}
	return views, nil
}

// fromParts builds one view from its plain form through FromPure.
func fromParts(meta Metadata, pv PureView) (View, error) {
	c, err := FromPure(Pure{pv}, meta)
	if err != nil {
		return View{}, err
	}
	return c.View(0)
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// key, value, index and starts are joined (sharding.Join,
// sharding.JoinValues), the codes and the scales of quantized views alike,
// and the views must agree on storage (dtype, quantization, NF4 block) and
// layer index. Replicas must hold the same bytes (codes and scales
// included); shard views whose shapes do not fit s and meta, or replicas
// that differ, give an error wrapping ErrSharding (and
// sharding.ErrReplicaMismatch for the latter) that names the device.
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
	index, starts := make([][]int32, n), make([][]int32, n)
	l0, ok0 := parts[0].LayerIndex()
	for i, p := range parts {
		if p.IsEmpty() {
			return View{}, fmt.Errorf("%w: shard view %d is empty", ErrSharding, i)
		}
		if p.DType() != parts[0].DType() {
			return View{}, fmt.Errorf("%w: shard view %d is %s, shard view 0 is %s", ErrSharding, i, p.DType(), parts[0].DType())
		}
		if p.Storage() != parts[0].Storage() {
			return View{}, fmt.Errorf("%w: shard view %d is stored as %s, shard view 0 as %s", ErrSharding, i, p.Storage(), parts[0].Storage())
		}
		if l, ok := p.LayerIndex(); l != l0 || ok != ok0 {
			return View{}, fmt.Errorf("%w: shard view %d has layer index %s, shard view 0 has %s",
				ErrSharding, i, layerString(l, ok), layerString(l0, ok0))
		}
		ks, vs := p.stores()
		keys[i], values[i], keyScales[i], valueScales[i] = ks.Data, vs.Data, ks.Scales, vs.Scales
		index[i], starts[i] = p.index, p.starts
	}
	st := parts[0].Storage()
	kf, vf, err := s.checkStorage(st, meta, mesh)
	if err != nil {
		return View{}, err
	}
	B, S := meta.BatchSize, meta.SequenceLength
	pv := PureView{BlockSize: st.BlockSize}
	for _, c := range []struct {
		name  string
		ts    []tensor.Tensor
		spec  sharding.Spec
		shape []int
		dst   *tensor.Tensor
	}{
		{"key", keys, s.Key, []int{B, S, meta.KeyHeads, kf.DataPerRow()}, &pv.Key},
		{"value", values, s.Value, []int{B, S, meta.ValueHeads, vf.DataPerRow()}, &pv.Value},
		{"key scales", keyScales, s.Key, []int{B, S, meta.KeyHeads, kf.ScalesPerRow()}, &pv.KeyScales},
		{"value scales", valueScales, s.Value, []int{B, S, meta.ValueHeads, vf.ScalesPerRow()}, &pv.ValueScales},
	} {
		if !kf.Quantized() && c.ts[0].IsZero() {
			continue // unquantized views have no scales
		}
		if *c.dst, err = sharding.Join(c.ts, c.spec, mesh, c.shape); err != nil {
			return View{}, fmt.Errorf("%w: %s: %w", ErrSharding, c.name, err)
		}
	}
	if pv.Index, err = sharding.JoinValues(index, s.Index, mesh, B); err != nil {
		return View{}, fmt.Errorf("%w: index: %w", ErrSharding, err)
	}
	if pv.Starts, err = sharding.JoinValues(starts, s.Starts, mesh, B); err != nil {
		return View{}, fmt.Errorf("%w: starts: %w", ErrSharding, err)
	}
	if ok0 {
		pv.LayerIndex = &l0
	}
	return fromParts(meta, pv)
}

// layerString formats an optional layer index for messages.
func layerString(l int, ok bool) string {
	if !ok {
		return "None"
	}
	return fmt.Sprint(l)
}
