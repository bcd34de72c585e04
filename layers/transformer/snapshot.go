package transformer

import (
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
)

// The "format" metadata of the snapshots View.MarshalBinary and
// Cache.MarshalBinary write; UnmarshalView and UnmarshalCache accept only
// their own.
const (
	ViewSnapshotFormat  = "kvmesh.transformer.View/v1"
	CacheSnapshotFormat = "kvmesh.transformer.Cache/v1"
)

// snap is the snapshot codec: package viewsnap's view-list format, formats
// "kvmesh.transformer.View/v1" and "kvmesh.transformer.Cache/v1", with each
// view's key, value, index and starts, and for a quantized view its key and
// value scales and (NF4) block size.
var snap = viewsnap.Codec[View]{
	ViewFormat:  ViewSnapshotFormat,
	CacheFormat: CacheSnapshotFormat,
	Err:         ErrSnapshot,
	Fields:      []string{"metadata", "layer_index", "key", "value", "index", "starts", "key_scales", "value_scales", "block_size"},
	Put:         putView,
	Get:         getView,
}

// MarshalBinary encodes the view losslessly as a tensor.Snapshot (the
// safetensors layout): key, value, index and starts under "views.0.*", the
// metadata as JSON and the layer index in the header's metadata. Positions
// past a row's index are stored as they read (unspecified content).
//
// A quantized view is stored as it is held, losslessly: "key" and "value"
// are its codes (I8, or U8 packed NF4 codes), "key_scales" and
// "value_scales" its scales or absmax in the cache dtype, and an NF4 view
// records its block size under "block_size" in the header's metadata.
func (v View) MarshalBinary() ([]byte, error) { return snap.MarshalView(v) }

// UnmarshalView decodes a snapshot written by View.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalView(data []byte) (View, error) { return snap.UnmarshalView(data) }

// MarshalBinary encodes the cache losslessly as a tensor.Snapshot: for each
// layer i, "views.<i>.key", "views.<i>.value", "views.<i>.index" and
// "views.<i>.starts", with each view's metadata (JSON) and layer index in the
// header's metadata; empty views are recorded as such.
func (c Cache) MarshalBinary() ([]byte, error) { return snap.MarshalCache(c.views) }

// UnmarshalCache decodes a snapshot written by Cache.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalCache(data []byte) (Cache, error) {
	views, err := snap.UnmarshalCache(data)
	if err != nil {
		return Cache{}, err
	}
	return Cache{views: views}, nil
}

// putView stores the entries of a non-empty view (snap.Put).
func putView(e viewsnap.Entry, v View) error {
	if err := e.SetMetadata(v.meta); err != nil {
		return err
	}
	e.SetLayerIndex(v.layer, v.hasLayer)
	e.SetTensor("key", v.key)
	e.SetTensor("value", v.value)
	e.SetInt32s("index", v.index)
	e.SetInt32s("starts", v.starts)
	if v.IsQuantized() {
		e.SetTensor("key_scales", v.quant.keyScales)
		e.SetTensor("value_scales", v.quant.valueScales)
		if v.quant.st.BlockSize != 0 {
			e.SetMeta("block_size", strconv.Itoa(v.quant.st.BlockSize))
		}
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
	key, _ := e.Tensor("key")
	value, _ := e.Tensor("value")
	pv := PureView{Key: key, Value: value, Index: e.Int32s("index"), Starts: e.Int32s("starts")}
	pv.KeyScales, _ = e.Tensor("key_scales")
	pv.ValueScales, _ = e.Tensor("value_scales")
	if bs, ok := e.Meta("block_size"); ok {
		n, err := strconv.Atoi(bs)
		if err != nil || n <= 0 {
			return View{}, fmt.Errorf("%w: %s = %q (want a positive block size)", ErrSnapshot, e.Key("block_size"), bs)
		}
		pv.BlockSize = n
	}
	var err error
	if pv.LayerIndex, err = e.LayerIndex(); err != nil {
		return View{}, err
	}
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	return viewFromParts(meta, pv)
}
