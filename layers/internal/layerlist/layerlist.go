package layerlist

import (
	"fmt"
	"slices"
	"strings"
)

// View is what a list holds: a view value whose zero value is the empty
// view, described by String ("None" when empty).
type View interface {
	IsEmpty() bool
	String() string
}

// Make returns n views, view l made by mk(l); the first error is returned
// as it is.
func Make[V View](n int, mk func(l int) (V, error)) ([]V, error) {
	views := make([]V, n)
	for l := range views {
		v, err := mk(l)
		if err != nil {
			return nil, err
		}
		views[l] = v
	}
	return views, nil
}

// Ops are the list operations that can fail, reporting failures with one
// cache package's sentinel errors.
type Ops[V View] struct {
	// OutOfRange is wrapped by errors about a layer out of range.
	OutOfRange error
	// Empty is wrapped by errors about an update of an empty layer.
	Empty error
	// Incompatible is wrapped by errors about lists that Insert cannot
	// pair.
	Incompatible error
}

// Check reports a layer out of range as Python's IndexError does ("list
// index out of range"), with the layer and the valid range.
func (o Ops[V]) Check(views []V, i int) error {
	if i < 0 || i >= len(views) {
		return fmt.Errorf("%w: list index out of range: layer %d (cache has layers 0..%d)", o.OutOfRange, i, len(views)-1)
	}
	return nil
}

// Get returns the view of layer i (possibly empty).
func (o Ops[V]) Get(views []V, i int) (V, error) {
	if err := o.Check(views, i); err != nil {
		var zero V
		return zero, err
	}
	return views[i], nil
}

// With returns a copy of views whose layer i is v (which may be empty).
func (o Ops[V]) With(views []V, i int, v V) ([]V, error) {
	if err := o.Check(views, i); err != nil {
		return nil, err
	}
	next := slices.Clone(views)
	next[i] = v
	return next, nil
}

// Update returns a copy of views whose layer i is fn applied to it. An
// empty view is an error with EasyDeL's message ("Cache view for layer 0 is
// None"); fn's error is prefixed with the layer ("layer 0: ...").
func (o Ops[V]) Update(views []V, i int, fn func(V) (V, error)) ([]V, error) {
	if err := o.Check(views, i); err != nil {
		return nil, err
	}
	if views[i].IsEmpty() {
		return nil, fmt.Errorf("%w: Cache view for layer %d is None", o.Empty, i)
	}
	v, err := fn(views[i])
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", i, err)
	}
	return o.With(views, i, v)
}

// Each returns a new list holding fn(l, v) for every non-empty view v of
// layer l; empty views stay empty. fn's first error is prefixed with the
// layer ("layer 1: ...").
func (o Ops[V]) Each(views []V, fn func(l int, v V) (V, error)) ([]V, error) {
	next := make([]V, len(views))
	for l, v := range views {
		if v.IsEmpty() {
			continue
		}
		nv, err := fn(l, v)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", l, err)
		}
		next[l] = nv
	}
	return next, nil
}

// Insert returns Each(views, fn(v, other[l])): a cache-level Insert that
// pairs layer l of views with layer l of other. other must have as many
// layers, and each layer must be empty in both lists or in neither.
func (o Ops[V]) Insert(views, other []V, fn func(v, o V) (V, error)) ([]V, error) {
	if len(other) != len(views) {
		return nil, fmt.Errorf("%w: Insert of a cache of %d layers into one of %d layers", o.Incompatible, len(other), len(views))
	}
	for l, v := range views {
		if v.IsEmpty() != other[l].IsEmpty() {
			return nil, fmt.Errorf("%w: layer %d is empty in only one of the caches", o.Incompatible, l)
		}
	}
	return o.Each(views, func(l int, v V) (V, error) { return fn(v, other[l]) })
}

// String describes a cache as EasyDeL's repr does:
// "<name>(views=[<view>, None])".
func String[V View](name string, views []V) string {
	parts := make([]string, len(views))
	for i, v := range views {
		parts[i] = v.String()
	}
	return name + "(views=[" + strings.Join(parts, ", ") + "])"
}
