package lightning

import (
	"fmt"
	"slices"
	"strings"

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
	views := make([]View, numHiddenLayers)
	for l := range views {
		v, err := NewView(meta, dtype, &l)
		if err != nil {
			return Cache{}, err
		}
		views[l] = v
	}
	return Cache{views: views}, nil
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
func (c Cache) View(i int) (View, error) {
	if err := c.checkLayer(i); err != nil {
		return View{}, err
	}
	return c.views[i], nil
}

// checkLayer reports a layer out of range as Python's IndexError does, with
// the layer and the valid range.
func (c Cache) checkLayer(i int) error {
	if i < 0 || i >= len(c.views) {
		return fmt.Errorf("%w: list index out of range: layer %d (cache has layers 0..%d)", ErrOutOfRange, i, len(c.views)-1)
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

// update applies fn to layer i's view: an out-of-range layer or an empty
// view is an error, the latter with the message of EasyDeL's other state
// caches ("Cache view for layer 0 is None").
func (c Cache) update(i int, fn func(View) (View, error)) (Cache, error) {
	if err := c.checkLayer(i); err != nil {
		return Cache{}, err
	}
	if c.views[i].IsEmpty() {
		return Cache{}, fmt.Errorf("%w: Cache view for layer %d is None", ErrEmpty, i)
	}
	v, err := fn(c.views[i])
	if err != nil {
		return Cache{}, fmt.Errorf("layer %d: %w", i, err)
	}
	return c.WithView(i, v)
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
	if len(other.views) != len(c.views) {
		return Cache{}, fmt.Errorf("%w: Insert of a cache of %d layers into one of %d layers", ErrIncompatible, len(other.views), len(c.views))
	}
	for l, v := range c.views {
		if v.IsEmpty() != other.views[l].IsEmpty() {
			return Cache{}, fmt.Errorf("%w: layer %d is empty in only one of the caches", ErrIncompatible, l)
		}
	}
	return c.each(func(l int, v View) (View, error) { return v.Insert(other.views[l], slot) })
}

// each applies fn to every non-empty view.
func (c Cache) each(fn func(l int, v View) (View, error)) (Cache, error) {
	views := make([]View, len(c.views))
	for l, v := range c.views {
		if v.IsEmpty() {
			continue
		}
		nv, err := fn(l, v)
		if err != nil {
			return Cache{}, fmt.Errorf("layer %d: %w", l, err)
		}
		views[l] = nv
	}
	return Cache{views: views}, nil
}

// String describes the cache and its views:
// "LightningCache(views=[LightningCacheView(key_value=None, layer_index=0), None])".
func (c Cache) String() string {
	parts := make([]string, len(c.views))
	for i, v := range c.views {
		parts[i] = v.String()
	}
	return "LightningCache(views=[" + strings.Join(parts, ", ") + "])"
}
