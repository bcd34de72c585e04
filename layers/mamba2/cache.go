package mamba2

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Cache is a Mamba2 state cache: one View per layer (EasyDeL's Mamba2Cache).
// An entry may be the empty View (EasyDeL's None).
//
// A Cache is an immutable value: every update returns a new Cache whose
// other layers are the receiver's views, and leaves the receiver unchanged.
// EasyDeL's cache-level methods build a new list too, but the view methods
// they call mutate the view and return it, so EasyDeL's "new" cache shares
// the mutated view with the original.
type Cache struct {
	views []View
}

// layers does the per-layer plumbing of Cache, reporting failures with this
// package's sentinel errors.
var layers = layerlist.Ops[View]{OutOfRange: ErrOutOfRange, Empty: ErrEmpty, Incompatible: ErrIncompatible}

// cacheOf returns the Cache of views, or err.
func cacheOf(views []View, err error) (Cache, error) {
	if err != nil {
		return Cache{}, err
	}
	return Cache{views: views}, nil
}

// Init returns a zero-filled cache for meta (EasyDeL's init_cache):
// num_hidden_layers views with layer indexes 0..L-1 and states of dtype.
//
// Deviations from EasyDeL: the number of layers is the metadata's
// num_hidden_layers (EasyDeL's init_cache takes it as a separate argument,
// which may disagree with the metadata); no partition_specs; dtype must be
// given (EasyDeL defaults to bfloat16).
func Init(meta Metadata, dtype tensor.DType) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	return cacheOf(layerlist.Make(meta.NumHiddenLayers, func(l int) (View, error) { return NewView(meta, dtype, &l) }))
}

// InitEmpty returns a cache of numLayers empty views (EasyDeL's init_empty).
// It panics if numLayers is negative.
func InitEmpty(numLayers int) Cache {
	if numLayers < 0 {
		panic(fmt.Sprintf("mamba2: InitEmpty(%d)", numLayers))
	}
	return Cache{views: make([]View, numLayers)}
}

// Len returns the number of views (layers).
func (c Cache) Len() int { return len(c.views) }

// View returns the view of layer i (possibly empty); i out of range is an
// error naming it.
func (c Cache) View(i int) (View, error) { return layers.Get(c.views, i) }

// WithView returns a copy of c whose layer i is v (EasyDeL's __setitem__,
// without mutating c). v may be empty.
func (c Cache) WithView(i int, v View) (Cache, error) {
	return cacheOf(layers.With(c.views, i, v))
}

// update applies fn to layer i's view: an out-of-range layer or an empty
// view is an error with EasyDeL's message ("Cache view for layer 0 is
// None").
func (c Cache) update(i int, fn func(View) (View, error)) (Cache, error) {
	return cacheOf(layers.Update(c.views, i, fn))
}

// UpdateConvState returns the cache with layer's conv state updated by
// View.UpdateConvState (EasyDeL's update_conv_state).
func (c Cache) UpdateConvState(layer int, newConvState tensor.Tensor, cachePosition int) (Cache, error) {
	return c.update(layer, func(v View) (View, error) { return v.UpdateConvState(newConvState, cachePosition) })
}

// UpdateConvStatePositions returns the cache with layer's conv state updated
// by View.UpdateConvStatePositions (update_conv_state with an array
// cache_position).
func (c Cache) UpdateConvStatePositions(layer int, newConvState tensor.Tensor, cachePositions []int32) (Cache, error) {
	return c.update(layer, func(v View) (View, error) { return v.UpdateConvStatePositions(newConvState, cachePositions) })
}

// UpdateSSMState returns the cache with layer's SSM state replaced
// (EasyDeL's update_ssm_state).
func (c Cache) UpdateSSMState(layer int, newSSMState tensor.Tensor) (Cache, error) {
	return c.update(layer, func(v View) (View, error) { return v.UpdateSSMState(newSSMState) })
}

// UpdateSeq returns the cache with View.UpdateSeq(num) applied to every
// non-empty view (EasyDeL's update_seq, which mutates the views).
func (c Cache) UpdateSeq(num int) (Cache, error) {
	return c.each(func(_ int, v View) (View, error) { return v.UpdateSeq(num) })
}

// SeqlenOffset returns the seqlen offset of the first non-empty view (0 when
// every view is empty): the value a mixer reads to choose the decode path.
func (c Cache) SeqlenOffset() int {
	for _, v := range c.views {
		if !v.IsEmpty() {
			return v.seqlenOffset
		}
	}
	return 0
}

// ResetLayer returns the cache with layer's view reset (View.Reset).
func (c Cache) ResetLayer(layer int) (Cache, error) {
	return c.update(layer, View.Reset)
}

// Reset returns the cache with every non-empty view reset (View.Reset);
// empty views stay empty (EasyDeL's reset, which mutates the views in
// place).
func (c Cache) Reset() (Cache, error) {
	return c.each(func(_ int, v View) (View, error) { return v.Reset() })
}

// ResetRows returns the cache with the given batch rows zeroed in every
// non-empty view; the other rows are shared. Not in EasyDeL.
func (c Cache) ResetRows(rows ...int) (Cache, error) {
	return c.each(func(_ int, v View) (View, error) { return v.ResetRows(rows...) })
}

// Insert returns the cache whose rows [slot, slot+B') hold other's B' rows
// in every layer (View.Insert), sharing storage. other must have as many
// layers, and each layer must be empty in both caches or in neither.
func (c Cache) Insert(other Cache, slot int) (Cache, error) {
	return cacheOf(layers.Insert(c.views, other.views, func(v, o View) (View, error) { return v.Insert(o, slot) }))
}

// each applies fn to every non-empty view.
func (c Cache) each(fn func(l int, v View) (View, error)) (Cache, error) {
	return cacheOf(layers.Each(c.views, fn))
}

// String describes the cache and its views:
// "Mamba2Cache(views=[Mamba2CacheView(...), None])".
func (c Cache) String() string { return layerlist.String("Mamba2Cache", c.views) }
