package lightning

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Cache is a lightning-attention cache: one View per layer (EasyDeL's
// LightningCache). An entry may be the empty View (EasyDeL's None).
//
// A Cache is an immutable value: every update returns a new Cache whose
// other layers are the receiver's views, and leaves the receiver unchanged.
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

// Init returns a cache of numHiddenLayers views for meta whose key_value
// states are absent (EasyDeL's init_cache(num_hidden_layers, metadata)),
// with layer indexes 0..L-1 and state dtype dtype. A negative
// numHiddenLayers is an error.
//
// Deviation from EasyDeL: the dtype is fixed up front (EasyDeL's key_value
// takes whatever the model assigns).
func Init(numHiddenLayers int, meta Metadata, dtype tensor.DType) (Cache, error) {
	if numHiddenLayers < 0 {
		return Cache{}, fmt.Errorf("%w: num_hidden_layers must not be negative (got %d)", ErrMetadata, numHiddenLayers)
	}
	return cacheOf(layerlist.Make(numHiddenLayers, func(l int) (View, error) { return NewView(meta, dtype, &l) }))
}

// InitEmpty returns a cache of numLayers empty views (EasyDeL's init_empty).
// It panics if numLayers is negative.
func InitEmpty(numLayers int) Cache {
	if numLayers < 0 {
		panic(fmt.Sprintf("lightning: InitEmpty(%d)", numLayers))
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
// view is an error, the latter with the message of EasyDeL's other state
// caches ("Cache view for layer 0 is None").
func (c Cache) update(i int, fn func(View) (View, error)) (Cache, error) {
	return cacheOf(layers.Update(c.views, i, fn))
}

// Update returns the cache with layer's state advanced by View.Update.
func (c Cache) Update(layer int, key, value tensor.Tensor, slopeRate []float64) (Cache, error) {
	return c.update(layer, func(v View) (View, error) { return v.Update(key, value, slopeRate) })
}

// UpdateKeyValue returns the cache with layer's state replaced
// (View.UpdateKeyValue).
func (c Cache) UpdateKeyValue(layer int, kv tensor.Tensor) (Cache, error) {
	return c.update(layer, func(v View) (View, error) { return v.UpdateKeyValue(kv) })
}

// ResetLayer returns the cache with layer's state absent again.
func (c Cache) ResetLayer(layer int) (Cache, error) {
	return c.update(layer, View.Reset)
}

// Reset returns the cache with every non-empty view's state absent; empty
// views stay empty.
func (c Cache) Reset() (Cache, error) {
	return c.each(func(_ int, v View) (View, error) { return v.Reset() })
}

// ResetRows returns the cache with the given batch rows zeroed in every
// non-empty view (View.ResetRows); the other rows are shared.
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
// "LightningCache(views=[LightningCacheView(key_value=None, layer_index=0), None])".
func (c Cache) String() string { return layerlist.String("LightningCache", c.views) }
