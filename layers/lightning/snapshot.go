package lightning

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Snapshot formats, stored in the "format" metadata entry.
const (
	viewFormat  = "kvmesh.lightning.View/v1"
	cacheFormat = "kvmesh.lightning.Cache/v1"
)

// MarshalBinary encodes the view losslessly as a tensor.Snapshot (the
// safetensors layout): "views.0.key_value" when the state is present, with
// the metadata (JSON), dtype and layer index in the header's metadata.
// EasyDeL's to_dict stringifies arrays instead.
func (v View) MarshalBinary() ([]byte, error) {
	return marshalViews(viewFormat, []View{v})
}

// UnmarshalView decodes a snapshot written by View.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalView(data []byte) (View, error) {
	views, err := unmarshalViews(viewFormat, data)
	if err != nil {
		return View{}, err
	}
	if len(views) != 1 {
		return View{}, fmt.Errorf("%w: a view snapshot holds %d views, want 1", ErrSnapshot, len(views))
	}
	return views[0], nil
}

// MarshalBinary encodes the cache losslessly as a tensor.Snapshot: for each
// layer i, "views.<i>.key_value" when that state is present, with each
// view's metadata (JSON), dtype and layer index in the header's metadata;
// empty views are recorded as such.
func (c Cache) MarshalBinary() ([]byte, error) {
	return marshalViews(cacheFormat, c.views)
}

// UnmarshalCache decodes a snapshot written by Cache.MarshalBinary.
// Malformed input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalCache(data []byte) (Cache, error) {
	views, err := unmarshalViews(cacheFormat, data)
	if err != nil {
		return Cache{}, err
	}
	return Cache{views: views}, nil
}

func viewKey(i int, field string) string { return "views." + strconv.Itoa(i) + "." + field }

func marshalViews(format string, views []View) ([]byte, error) {
	s := tensor.Snapshot{
		Metadata: map[string]string{"format": format, "views": strconv.Itoa(len(views))},
		Tensors:  map[string]tensor.Tensor{},
		Int32s:   map[string][]int32{},
	}
	for i, v := range views {
		if v.IsEmpty() {
			s.Metadata[viewKey(i, "empty")] = "true"
			continue
		}
		mj, err := json.Marshal(v.meta)
		if err != nil {
			return nil, fmt.Errorf("%w: view %d metadata: %v", ErrSnapshot, i, err)
		}
		s.Metadata[viewKey(i, "metadata")] = string(mj)
		if v.hasLayer {
			s.Metadata[viewKey(i, "layer_index")] = strconv.Itoa(v.layer)
		}
		s.Metadata[viewKey(i, "dtype")] = v.dtype.String()
		if v.HasKeyValue() {
			s.Tensors[viewKey(i, "key_value")] = v.kv
		}
	}
	out, err := s.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	return out, nil
}

func unmarshalViews(format string, data []byte) ([]View, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	if got := s.Metadata["format"]; got != format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrSnapshot, got, format)
	}
	n, err := strconv.Atoi(s.Metadata["views"])
	// Every view has at least one metadata entry, which bounds n.
	if err != nil || n < 0 || n > len(s.Metadata) {
		return nil, fmt.Errorf("%w: views count %q (want 0..%d)", ErrSnapshot, s.Metadata["views"], len(s.Metadata))
	}
	used := map[string]bool{"format": true, "views": true}
	views := make([]View, n)
	for i := range views {
		if e, ok := s.Metadata[viewKey(i, "empty")]; ok {
			if e != "true" {
				return nil, fmt.Errorf("%w: %s = %q", ErrSnapshot, viewKey(i, "empty"), e)
			}
			used[viewKey(i, "empty")] = true
			continue
		}
		v, err := decodeView(s, i, used)
		if err != nil {
			if errors.Is(err, ErrSnapshot) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: view %d: %w", ErrSnapshot, i, err)
		}
		views[i] = v
	}
	for k := range s.Metadata {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected metadata entry %q", ErrSnapshot, k)
		}
	}
	for k := range s.Tensors {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected tensor %q", ErrSnapshot, k)
		}
	}
	for k := range s.Int32s {
		if !used[k] {
			return nil, fmt.Errorf("%w: unexpected int32 array %q", ErrSnapshot, k)
		}
	}
	return views, nil
}

func decodeView(s tensor.Snapshot, i int, used map[string]bool) (View, error) {
	for _, f := range []string{"metadata", "dtype", "layer_index", "key_value"} {
		used[viewKey(i, f)] = true
	}
	mk := viewKey(i, "metadata")
	mj, ok := s.Metadata[mk]
	if !ok {
		return View{}, fmt.Errorf("%w: view %d has neither metadata nor an empty mark", ErrSnapshot, i)
	}
	var meta Metadata
	if err := json.Unmarshal([]byte(mj), &meta); err != nil {
		return View{}, fmt.Errorf("%w: %s: %v", ErrSnapshot, mk, err)
	}
	dk := viewKey(i, "dtype")
	dtype, err := tensor.ParseDType(s.Metadata[dk])
	if err != nil {
		return View{}, fmt.Errorf("%w: %s = %q: %v", ErrSnapshot, dk, s.Metadata[dk], err)
	}
	var layer *int
	if ls, ok := s.Metadata[viewKey(i, "layer_index")]; ok {
		l, err := strconv.Atoi(ls)
		if err != nil {
			return View{}, fmt.Errorf("%w: %s = %q", ErrSnapshot, viewKey(i, "layer_index"), ls)
		}
		layer = &l
	}
	v, err := NewView(meta, dtype, layer)
	if err != nil {
		return View{}, err
	}
	kv, ok := s.Tensors[viewKey(i, "key_value")]
	if !ok {
		return v, nil
	}
	if kv.DType() != dtype {
		return View{}, fmt.Errorf("%w: key_value is %s, the view's dtype is %s", ErrDType, kv.DType(), dtype)
	}
	if kv.Rank() != 4 || kv.Len() == 0 {
		return View{}, fmt.Errorf("%w: key_value has shape %v, want (batch, heads, key dim, value dim)", ErrShape, kv.Shape())
	}
	if err := v.checkState("key_value", [4]int{kv.Dim(0), kv.Dim(1), kv.Dim(2), kv.Dim(3)}); err != nil {
		return View{}, err
	}
	if v.kv, err = store.Restore(kv); err != nil {
		return View{}, err
	}
	return v, nil
}
