package mamba2

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Snapshot formats, stored in the "format" metadata entry.
const (
	viewFormat  = "kvmesh.mamba2.View/v1"
	cacheFormat = "kvmesh.mamba2.Cache/v1"
)

// MarshalBinary encodes the view losslessly as a tensor.Snapshot (the
// safetensors layout): "views.0.conv_states", "views.0.ssm_states" and
// "views.0.positions", with the metadata (JSON), seqlen offset and layer
// index in the header's metadata. EasyDeL's to_dict stringifies arrays
// instead.
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
// layer i, "views.<i>.conv_states", "views.<i>.ssm_states" and
// "views.<i>.positions", with each view's metadata (JSON), seqlen offset
// and layer index in the header's metadata; empty views are recorded as
// such.
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
		s.Metadata[viewKey(i, "seqlen_offset")] = strconv.Itoa(v.seqlenOffset)
		if v.hasLayer {
			s.Metadata[viewKey(i, "layer_index")] = strconv.Itoa(v.layer)
		}
		s.Tensors[viewKey(i, "conv_states")] = v.conv
		s.Tensors[viewKey(i, "ssm_states")] = v.ssm
		s.Int32s[viewKey(i, "positions")] = v.positions
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
	for _, f := range []string{"metadata", "seqlen_offset", "layer_index", "conv_states", "ssm_states", "positions"} {
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
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	v := View{meta: meta, positions: s.Int32s[viewKey(i, "positions")]}
	if ls, ok := s.Metadata[viewKey(i, "layer_index")]; ok {
		l, err := strconv.Atoi(ls)
		if err != nil {
			return View{}, fmt.Errorf("%w: %s = %q", ErrSnapshot, viewKey(i, "layer_index"), ls)
		}
		v.layer, v.hasLayer = l, true
	}
	so := s.Metadata[viewKey(i, "seqlen_offset")]
	off, err := strconv.Atoi(so)
	if err != nil || off < 0 {
		return View{}, fmt.Errorf("%w: %s = %q (want a non-negative integer)", ErrSnapshot, viewKey(i, "seqlen_offset"), so)
	}
	v.seqlenOffset = off
	conv, ssm := s.Tensors[viewKey(i, "conv_states")], s.Tensors[viewKey(i, "ssm_states")]
	B, m := meta.BatchSize, meta
	if !conv.HasShape(B, m.ConvDim(), m.ConvKernelSize) || !ssm.HasShape(B, m.NumHeads, m.HeadDim, m.StateSize) {
		return View{}, fmt.Errorf("%w: conv_states %s and ssm_states %s, want shapes %v and %v",
			ErrShape, conv, ssm, []int{B, m.ConvDim(), m.ConvKernelSize}, []int{B, m.NumHeads, m.HeadDim, m.StateSize})
	}
	if conv.DType() != ssm.DType() {
		return View{}, fmt.Errorf("%w: conv_states is %s, ssm_states is %s (want one dtype)", ErrDType, conv.DType(), ssm.DType())
	}
	if len(v.positions) != B {
		return View{}, fmt.Errorf("%w: positions has %d values, want one per batch row (%d)", ErrShape, len(v.positions), B)
	}
	if v.conv, err = store.Restore(conv); err != nil {
		return View{}, err
	}
	if v.ssm, err = store.Restore(ssm); err != nil {
		return View{}, err
	}
	return v, nil
}
