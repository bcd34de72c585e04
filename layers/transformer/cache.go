package transformer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Cache is a transformer KV cache: one View per layer (EasyDeL's
// TransformerCache). An entry may be the empty View (EasyDeL's None).
//
// A Cache is an immutable value: Insert, InsertIndex, InsertStarts and
// WithView return a new Cache and leave the receiver unchanged (EasyDeL's
// insert, insert_index, insert_starts and __setitem__ mutate the cache).
type Cache struct {
	views []View
}

// Init returns a zero-filled cache for meta (EasyDeL's init_cache): one view
// per layer, with layer indexes 0..num_hidden_layers-1, key and value of
// dtype and the same starts for every layer (all zeros when nil).
func Init(meta Metadata, dtype tensor.DType, starts []int32) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	views := make([]View, meta.NumHiddenLayers)
	for l := range views {
		v, err := NewView(meta, dtype, starts, &l)
		if err != nil {
			return Cache{}, err
		}
		views[l] = v
	}
	return Cache{views: views}, nil
}

// InitEmpty returns a cache of numLayers empty views (EasyDeL's init_empty:
// views = [None] * L). It panics if numLayers is negative.
func InitEmpty(numLayers int) Cache {
	if numLayers < 0 {
		panic(fmt.Sprintf("transformer: InitEmpty(%d)", numLayers))
	}
	return Cache{views: make([]View, numLayers)}
}

// Len returns the number of views (layers).
func (c Cache) Len() int { return len(c.views) }

// View returns the view of layer i (possibly empty); i out of range is an
// error naming it.
func (c Cache) View(i int) (View, error) {
	if err := c.checkLayer(i); err != nil {
		return View{}, err
	}
	return c.views[i], nil
}

func (c Cache) checkLayer(i int) error {
	if i < 0 || i >= len(c.views) {
		return fmt.Errorf("%w: layer %d (cache has layers 0..%d)", ErrOutOfRange, i, len(c.views)-1)
	}
	return nil
}

// WithView returns a copy of c whose layer i is v (EasyDeL's __setitem__,
// without mutating c). v may be empty.
func (c Cache) WithView(i int, v View) (Cache, error) {
	if err := c.checkLayer(i); err != nil {
		return Cache{}, err
	}
	views := slices.Clone(c.views)
	views[i] = v
	return Cache{views: views}, nil
}

// String describes the cache and its views.
func (c Cache) String() string {
	parts := make([]string, len(c.views))
	for i, v := range c.views {
		parts[i] = v.String()
	}
	return "TransformerCache(views=[" + strings.Join(parts, ", ") + "])"
}

// eachView applies fn to every layer's view and returns the new cache. An
// empty view is an error naming the layer.
func (c Cache) eachView(op string, fn func(l int, v View) (View, error)) (Cache, error) {
	views := make([]View, len(c.views))
	for l, v := range c.views {
		if v.IsEmpty() {
			return Cache{}, fmt.Errorf("%w: %s: layer %d is empty", ErrEmpty, op, l)
		}
		nv, err := fn(l, v)
		if err != nil {
			return Cache{}, fmt.Errorf("%s: layer %d: %w", op, l, err)
		}
		views[l] = nv
	}
	return Cache{views: views}, nil
}

// InsertIndex returns a cache whose every layer has index[slot+k] = index[k]
// (EasyDeL's insert_index, without mutating c). Rows [slot, slot+len(index))
// must exist (EasyDeL clamps the slot) and each value must be a position in
// [0, S]. A row whose index grows exposes positions its view never wrote:
// they keep whatever bytes the storage holds (zeros unless written before),
// and are frozen at that content, which costs O(growth) per row.
func (c Cache) InsertIndex(index []int32, slot int) (Cache, error) {
	return c.eachView("InsertIndex", func(_ int, v View) (View, error) { return v.withIndex(index, slot) })
}

// InsertStarts returns a cache whose every layer has starts[slot+k] =
// starts[k] (EasyDeL's insert_starts, without mutating c). Rows
// [slot, slot+len(starts)) must exist and each value must be in [0, S].
func (c Cache) InsertStarts(starts []int32, slot int) (Cache, error) {
	return c.eachView("InsertStarts", func(_ int, v View) (View, error) { return v.withStarts(starts, slot) })
}

// Insert returns a cache whose rows [slot, slot+B') hold other's B' rows, in
// every layer: key, value, index and starts (EasyDeL's insert, the
// prefill-to-decode-slot transfer, without mutating c). The rows' storage is
// shared with other, not copied; a later write to either cache copies only
// the chunk it changes. c's metadata is kept.
//
// other must have as many layers as c and, layer by layer, the same sequence
// length, heads, head dims and dtype; the slot must leave room for B' rows
// (EasyDeL clamps it and overwrites the last rows).
func (c Cache) Insert(other Cache, slot int) (Cache, error) {
	if len(other.views) != len(c.views) {
		return Cache{}, fmt.Errorf("%w: Insert of a cache of %d layers into one of %d layers", ErrIncompatible, len(other.views), len(c.views))
	}
	return c.eachView("Insert", func(l int, v View) (View, error) {
		o := other.views[l]
		if o.IsEmpty() {
			return View{}, fmt.Errorf("%w: the inserted cache's layer is empty", ErrEmpty)
		}
		return v.insert(o, slot)
	})
}

// insert shares o's rows into v's rows [slot, slot+B').
func (v View) insert(o View, slot int) (View, error) {
	m, om := v.meta, o.meta
	if m.SequenceLength != om.SequenceLength || m.KeyHeads != om.KeyHeads || m.KeyDim != om.KeyDim ||
		m.ValueHeads != om.ValueHeads || m.ValueDim != om.ValueDim || v.DType() != o.DType() {
		return View{}, fmt.Errorf("%w: inserting key %s / value %s into key %s / value %s (want equal S, heads, dims and dtype)",
			ErrIncompatible, o.key, o.value, v.key, v.value)
	}
	if err := checkSlot(slot, om.BatchSize, m.BatchSize); err != nil {
		return View{}, err
	}
	next := v
	perRow := v.key.NumChunks() / m.BatchSize // the same for key and value
	var err error
	if next.key, err = share(v.key, o.key, slot*perRow, om.BatchSize*perRow); err != nil {
		return View{}, err
	}
	if next.value, err = share(v.value, o.value, slot*perRow, om.BatchSize*perRow); err != nil {
		return View{}, err
	}
	next.index = slices.Clone(v.index)
	copy(next.index[slot:], o.index)
	next.starts = slices.Clone(v.starts)
	copy(next.starts[slot:], o.starts)
	return next, nil
}

func share(dst, src tensor.Tensor, at, count int) (tensor.Tensor, error) {
	e := dst.Edit()
	if err := e.Share(at, src, 0, count); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrIncompatible, err)
	}
	return e.Tensor(), nil
}

// PureView is one view in plain form: EasyDeL's [key, value, index, starts]
// list, plus the layer index (nil for none). The zero PureView stands for an
// empty view.
type PureView struct {
	Key, Value    tensor.Tensor
	Index, Starts []int32
	LayerIndex    *int
}

// Pure is a cache in plain form, one PureView per layer (EasyDeL's to_pure
// output).
type Pure []PureView

// ToPure returns the cache's arrays and the metadata of its last non-empty
// view (EasyDeL's to_pure returns views[-1].metadata; the zero Metadata when
// no view is non-empty). The tensors are shared, not copied; Index and Starts
// are copies.
//
// Deviation from EasyDeL: each PureView keeps its view's layer index.
func (c Cache) ToPure() (Pure, Metadata) {
	p := make(Pure, len(c.views))
	var meta Metadata
	for i, v := range c.views {
		if v.IsEmpty() {
			continue
		}
		p[i] = PureView{Key: v.key, Value: v.value, Index: v.Index(), Starts: v.Starts()}
		if v.hasLayer {
			p[i].LayerIndex = Ptr(v.layer)
		}
		meta = v.Metadata()
	}
	return p, meta
}

// FromPure rebuilds a cache from its plain form, every view with meta
// (EasyDeL's from_pure). Each non-zero PureView must hold key
// (B, S, key_heads, key_dim) and value (B, S, value_heads, value_dim) of one
// dtype, and B index and starts positions in [0, S]; a zero PureView gives an
// empty view.
//
// Tensors that already use the cache's chunk layout (those from ToPure) are
// shared; others are copied into it. A shared tensor is trusted to hold, in
// row b, the bytes its writer wrote at every position below Index[b] (true
// for ToPure's output): FromPure does not freeze positions that an edited
// Index exposes, as InsertIndex does.
//
// Deviation from EasyDeL: each view keeps PureView.LayerIndex (EasyDeL's
// from_pure sets layer_index to None).
func FromPure(p Pure, meta Metadata) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	views := make([]View, len(p))
	for l, pv := range p {
		if pv.Key.IsZero() && pv.Value.IsZero() && pv.Index == nil && pv.Starts == nil {
			continue
		}
		v, err := viewFromParts(meta, pv)
		if err != nil {
			return Cache{}, fmt.Errorf("FromPure: layer %d: %w", l, err)
		}
		views[l] = v
	}
	return Cache{views: views}, nil
}

// viewFromParts validates and assembles a view.
func viewFromParts(meta Metadata, pv PureView) (View, error) {
	B, S := meta.BatchSize, meta.SequenceLength
	if pv.Key.IsZero() || pv.Value.IsZero() {
		return View{}, fmt.Errorf("%w: key %s and value %s must both be present", ErrDType, pv.Key, pv.Value)
	}
	if pv.Key.DType() != pv.Value.DType() {
		return View{}, fmt.Errorf("%w: key is %s, value is %s (want one dtype)", ErrDType, pv.Key.DType(), pv.Value.DType())
	}
	if !pv.Key.HasShape(B, S, meta.KeyHeads, meta.KeyDim) {
		return View{}, fmt.Errorf("%w: key has shape %v, want %v", ErrShape, pv.Key.Shape(), []int{B, S, meta.KeyHeads, meta.KeyDim})
	}
	if !pv.Value.HasShape(B, S, meta.ValueHeads, meta.ValueDim) {
		return View{}, fmt.Errorf("%w: value has shape %v, want %v", ErrShape, pv.Value.Shape(), []int{B, S, meta.ValueHeads, meta.ValueDim})
	}
	if err := checkPositions("index", pv.Index, B, S); err != nil {
		return View{}, err
	}
	if err := checkPositions("starts", pv.Starts, B, S); err != nil {
		return View{}, err
	}
	key, err := rechunk(pv.Key, S)
	if err != nil {
		return View{}, err
	}
	value, err := rechunk(pv.Value, S)
	if err != nil {
		return View{}, err
	}
	v := View{key: key, value: value, index: slices.Clone(pv.Index), starts: slices.Clone(pv.Starts), meta: meta.clone()}
	if pv.LayerIndex != nil {
		v.layer, v.hasLayer = *pv.LayerIndex, true
	}
	return v, nil
}

// rechunk returns t in the cache's chunk layout: t itself when it already
// has it, else a copy.
func rechunk(t tensor.Tensor, s int) (tensor.Tensor, error) {
	want := chunkPositions(s) * t.Dim(2) * t.Dim(3)
	if t.ChunkLen() == want || t.Len() == 0 {
		return t, nil
	}
	out, err := newStore(t.DType(), t.Dim(0), t.Dim(1), t.Dim(2), t.Dim(3))
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	e := out.Edit()
	if err := e.Write(0, t, 0, t.Len()); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	return e.Tensor(), nil
}
