package viewsnap

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// View is what a Codec encodes: a view value whose empty form (EasyDeL's
// None) is recorded by a mark instead of entries, and decodes to the zero
// value.
type View interface {
	IsEmpty() bool
}

// Codec encodes views of type V and lists of them (a cache) as snapshots,
// and decodes them back. Its fields are set once, in a package variable.
type Codec[V View] struct {
	// ViewFormat and CacheFormat are the "format" entries of a one-view
	// snapshot and of a cache snapshot; a decoder accepts only its own.
	ViewFormat, CacheFormat string
	// Err is the package's snapshot sentinel, wrapped by every error the
	// Codec and its Entries return.
	Err error
	// Fields names every entry a non-empty view may have, without the
	// "views.<i>." prefix (e.g. "metadata", "layer_index", "conv_states").
	// Entries of a view that are not listed are rejected as unexpected.
	Fields []string
	// Put stores the entries of a non-empty view.
	Put func(e Entry, v V) error
	// Get decodes a non-empty view from its entries. An error that does not
	// wrap Err is wrapped as "<Err>: view <i>: <error>", so the package's
	// other sentinels (a shape or dtype error) stay visible to errors.Is.
	Get func(e Entry) (V, error)
}

// MarshalView encodes v as a one-view snapshot of format ViewFormat.
func (c Codec[V]) MarshalView(v V) ([]byte, error) {
	return c.marshal(c.ViewFormat, []V{v})
}

// UnmarshalView decodes a snapshot written by MarshalView.
func (c Codec[V]) UnmarshalView(data []byte) (V, error) {
	views, err := c.unmarshal(c.ViewFormat, data)
	if err != nil {
		var zero V
		return zero, err
	}
	if len(views) != 1 {
		var zero V
		return zero, fmt.Errorf("%w: a view snapshot holds %d views, want 1", c.Err, len(views))
	}
	return views[0], nil
}

// MarshalCache encodes views as a snapshot of format CacheFormat.
func (c Codec[V]) MarshalCache(views []V) ([]byte, error) {
	return c.marshal(c.CacheFormat, views)
}

// UnmarshalCache decodes a snapshot written by MarshalCache; empty views
// decode to the zero V.
func (c Codec[V]) UnmarshalCache(data []byte) ([]V, error) {
	return c.unmarshal(c.CacheFormat, data)
}

func (c Codec[V]) marshal(format string, views []V) ([]byte, error) {
	s := tensor.Snapshot{
		Metadata: map[string]string{"format": format, "views": strconv.Itoa(len(views))},
		Tensors:  map[string]tensor.Tensor{},
		Int32s:   map[string][]int32{},
	}
	for i, v := range views {
		e := Entry{s: s, i: i, err: c.Err}
		if v.IsEmpty() {
			e.SetMeta("empty", "true")
			continue
		}
		if err := c.Put(e, v); err != nil {
			return nil, err
		}
	}
	out, err := s.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", c.Err, err)
	}
	return out, nil
}

func (c Codec[V]) unmarshal(format string, data []byte) ([]V, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", c.Err, err)
	}
	if got := s.Metadata["format"]; got != format {
		return nil, fmt.Errorf("%w: format %q, want %q", c.Err, got, format)
	}
	n, err := strconv.Atoi(s.Metadata["views"])
	// Every view has at least one metadata entry, which bounds n.
	if err != nil || n < 0 || n > len(s.Metadata) {
		return nil, fmt.Errorf("%w: views count %q (want 0..%d)", c.Err, s.Metadata["views"], len(s.Metadata))
	}
	used := map[string]bool{"format": true, "views": true}
	views := make([]V, n)
	for i := range views {
		e := Entry{s: s, i: i, err: c.Err}
		if mark, ok := e.Meta("empty"); ok {
			if mark != "true" {
				return nil, fmt.Errorf("%w: %s = %q", c.Err, e.Key("empty"), mark)
			}
			used[e.Key("empty")] = true
			continue
		}
		for _, f := range c.Fields {
			used[e.Key(f)] = true
		}
		v, err := c.Get(e)
		if err != nil {
			if errors.Is(err, c.Err) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: view %d: %w", c.Err, i, err)
		}
		views[i] = v
	}
	for k := range s.Metadata {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected metadata entry %q", c.Err, k)
		}
	}
	for k := range s.Tensors {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected tensor %q", c.Err, k)
		}
	}
	for k := range s.Int32s {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected int32 array %q", c.Err, k)
		}
	}
	return views, nil
}

// Entry is the part of a snapshot that belongs to view i: the entries named
// "views.<i>.<field>". Put functions write through it and Get functions
// read through it; its errors wrap the Codec's Err.
type Entry struct {
	s   tensor.Snapshot
	i   int
	err error
}

// Index returns the view's position i in the list.
func (e Entry) Index() int { return e.i }

// Key returns the snapshot name of the view's field, "views.<i>.<field>".
func (e Entry) Key(field string) string { return "views." + strconv.Itoa(e.i) + "." + field }

// SetMetadata stores meta as JSON under "metadata".
func (e Entry) SetMetadata(meta any) error {
	mj, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("%w: view %d metadata: %v", e.err, e.i, err)
	}
	e.SetMeta("metadata", string(mj))
	return nil
}

// Metadata decodes the JSON under "metadata" into dst (a pointer). A
// missing entry means the view has neither metadata nor an empty mark.
func (e Entry) Metadata(dst any) error {
	mk := e.Key("metadata")
	mj, ok := e.s.Metadata[mk]
	if !ok {
		return fmt.Errorf("%w: view %d has neither metadata nor an empty mark", e.err, e.i)
	}
	if err := json.Unmarshal([]byte(mj), dst); err != nil {
		return fmt.Errorf("%w: %s: %v", e.err, mk, err)
	}
	return nil
}

// SetLayerIndex stores layer under "layer_index" when ok; a view without a
// layer index (EasyDeL's layer_index=None) stores nothing.
func (e Entry) SetLayerIndex(layer int, ok bool) {
	if ok {
		e.SetMeta("layer_index", strconv.Itoa(layer))
	}
}

// LayerIndex returns the integer under "layer_index", or nil when there is
// none.
func (e Entry) LayerIndex() (*int, error) {
	ls, ok := e.Meta("layer_index")
	if !ok {
		return nil, nil
	}
	l, err := strconv.Atoi(ls)
	if err != nil {
		return nil, fmt.Errorf("%w: %s = %q", e.err, e.Key("layer_index"), ls)
	}
	return &l, nil
}

// SetMeta stores a string in the header's metadata under field.
func (e Entry) SetMeta(field, value string) { e.s.Metadata[e.Key(field)] = value }

// Meta returns the string stored under field; ok is false when there is
// none.
func (e Entry) Meta(field string) (value string, ok bool) {
	value, ok = e.s.Metadata[e.Key(field)]
	return value, ok
}

// SetTensor stores t under field.
func (e Entry) SetTensor(field string, t tensor.Tensor) { e.s.Tensors[e.Key(field)] = t }

// Tensor returns the tensor stored under field; ok is false (and t the zero
// Tensor) when there is none.
func (e Entry) Tensor(field string) (t tensor.Tensor, ok bool) {
	t, ok = e.s.Tensors[e.Key(field)]
	return t, ok
}

// SetInt32s stores xs under field.
func (e Entry) SetInt32s(field string, xs []int32) { e.s.Int32s[e.Key(field)] = xs }

// Int32s returns the int32 array stored under field, nil when there is
// none.
func (e Entry) Int32s(field string) []int32 { return e.s.Int32s[e.Key(field)] }
