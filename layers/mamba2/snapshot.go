package mamba2

import (
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
)

// snap is the snapshot codec: package viewsnap's view-list format, formats
// "kvmesh.mamba2.View/v1" and "kvmesh.mamba2.Cache/v1", with each view's
// seqlen_offset, conv_states, ssm_states and positions.
var snap = viewsnap.Codec[View]{
	ViewFormat:  "kvmesh.mamba2.View/v1",
	CacheFormat: "kvmesh.mamba2.Cache/v1",
	Err:         ErrSnapshot,
	Fields:      []string{"metadata", "seqlen_offset", "layer_index", "conv_states", "ssm_states", "positions"},
	Put:         putView,
	Get:         getView,
}

// MarshalBinary encodes the view losslessly as a tensor.Snapshot (the
// safetensors layout): "views.0.conv_states", "views.0.ssm_states" and
// "views.0.positions", with the metadata (JSON), seqlen offset and layer
// index in the header's metadata. EasyDeL's to_dict stringifies arrays
// instead.
func (v View) MarshalBinary() ([]byte, error) { return snap.MarshalView(v) }

// UnmarshalView decodes a snapshot written by View.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalView(data []byte) (View, error) { return snap.UnmarshalView(data) }

// MarshalBinary encodes the cache losslessly as a tensor.Snapshot: for each
// layer i, "views.<i>.conv_states", "views.<i>.ssm_states" and
// "views.<i>.positions", with each view's metadata (JSON), seqlen offset
// and layer index in the header's metadata; empty views are recorded as
// such.
func (c Cache) MarshalBinary() ([]byte, error) { return snap.MarshalCache(c.views) }

// UnmarshalCache decodes a snapshot written by Cache.MarshalBinary.
// Malformed input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalCache(data []byte) (Cache, error) {
	views, err := snap.UnmarshalCache(data)
	if err != nil {
		return Cache{}, err
	}
	return Cache{views: views}, nil
}

func putView(e viewsnap.Entry, v View) error {
	if err := e.SetMetadata(v.meta); err != nil {
		return err
	}
	e.SetLayerIndex(v.layer, v.hasLayer)
	e.SetMeta("seqlen_offset", strconv.Itoa(v.seqlenOffset))
	e.SetTensor("conv_states", v.conv)
	e.SetTensor("ssm_states", v.ssm)
	e.SetInt32s("positions", v.positions)
	return nil
}

func getView(e viewsnap.Entry) (View, error) {
	var meta Metadata
	if err := e.Metadata(&meta); err != nil {
		return View{}, err
	}
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	v := View{meta: meta, positions: e.Int32s("positions")}
	layer, err := e.LayerIndex()
	if err != nil {
		return View{}, err
	}
	if layer != nil {
		v.layer, v.hasLayer = *layer, true
	}
	so, _ := e.Meta("seqlen_offset")
	off, err := strconv.Atoi(so)
	if err != nil || off < 0 {
		return View{}, fmt.Errorf("%w: %s = %q (want a non-negative integer)", ErrSnapshot, e.Key("seqlen_offset"), so)
	}
	v.seqlenOffset = off
	conv, _ := e.Tensor("conv_states")
	ssm, _ := e.Tensor("ssm_states")
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
