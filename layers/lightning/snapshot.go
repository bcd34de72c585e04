package lightning

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// The "format" metadata of the snapshots View.MarshalBinary and
// Cache.MarshalBinary write; UnmarshalView and UnmarshalCache accept only
// their own.
const (
	ViewSnapshotFormat  = "kvmesh.lightning.View/v1"
	CacheSnapshotFormat = "kvmesh.lightning.Cache/v1"
)

// snap is the snapshot codec: package viewsnap's view-list format, formats
// "kvmesh.lightning.View/v1" and "kvmesh.lightning.Cache/v1", with each
// view's dtype and, when present, key_value.
var snap = viewsnap.Codec[View]{
	ViewFormat:  ViewSnapshotFormat,
	CacheFormat: CacheSnapshotFormat,
	Err:         ErrSnapshot,
	Fields:      []string{"metadata", "dtype", "layer_index", "key_value"},
	Put:         putView,
	Get:         getView,
}

// MarshalBinary encodes the view losslessly as a tensor.Snapshot (the
// safetensors layout): "views.0.key_value" when the state is present, with
// the metadata (JSON), dtype and layer index in the header's metadata.
// EasyDeL's to_dict stringifies arrays instead.
func (v View) MarshalBinary() ([]byte, error) { return snap.MarshalView(v) }

// UnmarshalView decodes a snapshot written by View.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalView(data []byte) (View, error) { return snap.UnmarshalView(data) }

// MarshalBinary encodes the cache losslessly as a tensor.Snapshot: for each
// layer i, "views.<i>.key_value" when that state is present, with each
// view's metadata (JSON), dtype and layer index in the header's metadata;
// empty views are recorded as such.
func (c Cache) MarshalBinary() ([]byte, error) { return snap.MarshalCache(c.views) }

// UnmarshalCache decodes a snapshot written by Cache.MarshalBinary.
// Malformed input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalCache(data []byte) (Cache, error) { return cacheOf(snap.UnmarshalCache(data)) }

// putView stores the entries of a non-empty view (snap.Put).
func putView(e viewsnap.Entry, v View) error {
	if err := e.SetMetadata(v.meta); err != nil {
		return err
	}
	e.SetLayerIndex(v.layer.Get())
	e.SetMeta("dtype", v.dtype.String())
	if v.HasKeyValue() {
		e.SetTensor("key_value", v.kv)
	}
	return nil
}

// getView decodes a non-empty view from its entries, checking them against
// its metadata (snap.Get).
func getView(e viewsnap.Entry) (View, error) {
	var meta Metadata
	if err := e.Metadata(&meta); err != nil {
		return View{}, err
	}
	ds, _ := e.Meta("dtype")
	dtype, err := tensor.ParseDType(ds)
	if err == nil && !dtype.IsFloat() {
		err = fmt.Errorf("%s is not a float dtype", dtype)
	}
	if err != nil {
		return View{}, fmt.Errorf("%w: %s = %q: %v", ErrSnapshot, e.Key("dtype"), ds, err)
	}
	layer, err := e.LayerIndex()
	if err != nil {
		return View{}, err
	}
	v, err := NewView(meta, dtype, layer)
	if err != nil {
		return View{}, err
	}
	kv, ok := e.Tensor("key_value")
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
