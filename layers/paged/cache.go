package paged

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Cache is the paged KV cache of a whole model, one View per layer:
// EasyDeL's PagedAttentionCache (spec section 7.3). It is an immutable
// value; WithView returns a new Cache.
type Cache struct {
	views []View
}

// Init returns a cache of meta.NumHiddenLayers zero views in dtype,
// unquantized (EasyDeL's init_cache): InitStorage(meta, Storage{DType:
// dtype}). Every layer's key and value pools are allocated whole, as
// EasyDeL does: the pages are the cache's fixed memory budget.
func Init(meta Metadata, dtype tensor.DType) (Cache, error) {
	return InitStorage(meta, Storage{DType: dtype})
}

// InitEmpty returns a cache of numLayers absent views, to be filled with
// WithView. EasyDeL's init_empty is an instance method that returns None,
// unusable as a factory; this is the constructor it was meant to be.
func InitEmpty(numLayers int) (Cache, error) {
	if numLayers < 0 {
		return Cache{}, fmt.Errorf("%w: %d layers", ErrOutOfRange, numLayers)
	}
	return Cache{views: make([]View, numLayers)}, nil
}

// Len returns the number of layers.
func (c Cache) Len() int { return len(c.views) }

// View returns layer i's view; it is the zero View if the layer is absent.
func (c Cache) View(i int) (View, error) {
	if i < 0 || i >= len(c.views) {
		return View{}, fmt.Errorf("%w: layer %d of a cache of %d layers", ErrOutOfRange, i, len(c.views))
	}
	return c.views[i], nil
}

// WithView returns a copy of c whose layer i is v; c is unchanged (EasyDeL's
// __setitem__ assigns in place). A present v must have layer index i; the
// zero View makes the layer absent.
func (c Cache) WithView(i int, v View) (Cache, error) {
	if i < 0 || i >= len(c.views) {
		return Cache{}, fmt.Errorf("%w: layer %d of a cache of %d layers", ErrOutOfRange, i, len(c.views))
	}
	if !v.IsZero() && v.LayerIndex() != i {
		return Cache{}, fmt.Errorf("%w: view of layer %d set as layer %d", ErrOutOfRange, v.LayerIndex(), i)
	}
	views := make([]View, len(c.views))
	copy(views, c.views)
	views[i] = v
	return Cache{views: views}, nil
}
