package mamba2

import (
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
)

// The "format" metadata of the snapshots View.MarshalBinary and
// Cache.MarshalBinary write; UnmarshalView and UnmarshalCache accept only
// their own.
const (
	ViewSnapshotFormat  = "kvmesh.mamba2.View/v1"
	CacheSnapshotFormat = "kvmesh.mamba2.Cache/v1"
)

// snap is the snapshot codec: package viewsnap's view-list format, formats
// "kvmesh.mamba2.View/v1" and "kvmesh.mamba2.Cache/v1", with each view's
// seqlen_offset, conv_states, ssm_states and positions.
var snap = viewsnap.Codec[View]{
	ViewFormat:  ViewSnapshotFormat,
	CacheFormat: CacheSnapshotFormat,
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
func UnmarshalCache(data []byte) (Cache, error) { return cacheOf(snap.UnmarshalCache(data)) }

// putView stores the entries of a non-empty view (snap.Put).
func putView(e viewsnap.Entry, v View) error {
	e.SetMeta("seqlen_offset", strconv.Itoa(v.seqlenOffset))
	return layout.Put(e, v.meta, v.layer, v.st)
}

// getView decodes a non-empty view from its entries, checking them against
// its metadata (snap.Get).
func getView(e viewsnap.Entry) (View, error) {
	meta, layer, err := layout.GetHeader(e)
	if err != nil {
		return View{}, err
	}
	so, _ := e.Meta("seqlen_offset")
	off, err := strconv.Atoi(so)
	if err != nil || off < 0 {
		return View{}, fmt.Errorf("%w: %s = %q (want a non-negative integer)", ErrSnapshot, e.Key("seqlen_offset"), so)
	}
	st, err := layout.GetState(e, meta)
	if err != nil {
		return View{}, err
	}
	return View{st: st, seqlenOffset: off, meta: meta, layer: layer}, nil
}
