package paged

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Snapshot metadata keys and format names. A view snapshot holds the
// tensors "key_pages" and "value_pages"; a cache snapshot holds
// "layers.<i>.key_pages" and "layers.<i>.value_pages" for each present
// layer, and "layers.<i>.metadata" in the string metadata.
const (
	viewFormat  = "kvmesh.paged.view/v1"
	cacheFormat = "kvmesh.paged.cache/v1"
	// maxSnapshotLayers bounds the layer count a decoder accepts, so a
	// corrupt count cannot make it allocate without limit.
	maxSnapshotLayers = 1 << 16
)

// MarshalBinary encodes the view losslessly as a tensor.Snapshot
// (safetensors layout): the metadata as JSON under "metadata", the layer
// index under "layer_index", and the page tensors in full.
func (v View) MarshalBinary() ([]byte, error) {
	if err := v.checkPresent(); err != nil {
		return nil, err
	}
	s := tensor.Snapshot{
		Metadata: map[string]string{"format": viewFormat, "layer_index": strconv.Itoa(v.layer)},
		Tensors:  map[string]tensor.Tensor{},
	}
	if err := v.addTo(s, ""); err != nil {
		return nil, err
	}
	return s.MarshalBinary()
}

// UnmarshalView decodes a view encoded by View.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalView(data []byte) (View, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if f := s.Metadata["format"]; f != viewFormat {
		return View{}, fmt.Errorf("%w: format %q, want %q", ErrSnapshot, f, viewFormat)
	}
	layer, err := strconv.Atoi(s.Metadata["layer_index"])
	if err != nil {
		return View{}, fmt.Errorf("%w: layer_index %q: %w", ErrSnapshot, s.Metadata["layer_index"], err)
	}
	return viewFrom(s, "", layer)
}

// MarshalBinary encodes the cache losslessly as a tensor.Snapshot: the
// layer count under "num_layers" and each present layer's metadata and
// pages; absent layers store nothing.
func (c Cache) MarshalBinary() ([]byte, error) {
	s := tensor.Snapshot{
		Metadata: map[string]string{"format": cacheFormat, "num_layers": strconv.Itoa(len(c.views))},
		Tensors:  map[string]tensor.Tensor{},
	}
	for i, v := range c.views {
		if v.IsZero() {
			continue
		}
		if err := v.addTo(s, fmt.Sprintf("layers.%d.", i)); err != nil {
			return nil, err
		}
	}
	return s.MarshalBinary()
}

// UnmarshalCache decodes a cache encoded by Cache.MarshalBinary. Malformed
// input gives an error wrapping ErrSnapshot; it never panics. At most
// 65536 layers are accepted.
func UnmarshalCache(data []byte) (Cache, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return Cache{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if f := s.Metadata["format"]; f != cacheFormat {
		return Cache{}, fmt.Errorf("%w: format %q, want %q", ErrSnapshot, f, cacheFormat)
	}
	n, err := strconv.Atoi(s.Metadata["num_layers"])
	if err != nil || n < 0 || n > maxSnapshotLayers {
		return Cache{}, fmt.Errorf("%w: num_layers %q, want 0..%d", ErrSnapshot, s.Metadata["num_layers"], maxSnapshotLayers)
	}
	views := make([]View, n)
	used := 0 // snapshot entries that belong to a layer
	for i := range views {
		prefix := fmt.Sprintf("layers.%d.", i)
		if _, ok := s.Metadata[prefix+"metadata"]; !ok {
			continue
		}
		if views[i], err = viewFrom(s, prefix, i); err != nil {
			return Cache{}, fmt.Errorf("layer %d: %w", i, err)
		}
		used++
	}
	if len(s.Tensors) != 2*used || len(s.Metadata) != 2+used || len(s.Int32s) != 0 {
		return Cache{}, fmt.Errorf("%w: %d tensors, %d int32 arrays and %d metadata entries do not all belong to the %d present layers of %d",
			ErrSnapshot, len(s.Tensors), len(s.Int32s), len(s.Metadata), used, n)
	}
	return Cache{views: views}, nil
}

// addTo adds v's metadata and pages to s under prefix.
func (v View) addTo(s tensor.Snapshot, prefix string) error {
	mj, err := json.Marshal(v.meta)
	if err != nil {
		return fmt.Errorf("%w: metadata: %w", ErrSnapshot, err)
	}
	s.Metadata[prefix+"metadata"] = string(mj)
	s.Tensors[prefix+"key_pages"] = v.key
	s.Tensors[prefix+"value_pages"] = v.value
	return nil
}

// viewFrom rebuilds the view stored in s under prefix. The page tensors
// must have the pool shape the metadata gives, so the pool the decoder
// builds is never larger than the input.
func viewFrom(s tensor.Snapshot, prefix string, layer int) (View, error) {
	var meta Metadata
	if err := json.Unmarshal([]byte(s.Metadata[prefix+"metadata"]), &meta); err != nil {
		return View{}, fmt.Errorf("%w: %smetadata: %w", ErrSnapshot, prefix, err)
	}
	if err := meta.Validate(); err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	k, okK := s.Tensors[prefix+"key_pages"]
	val, okV := s.Tensors[prefix+"value_pages"]
	if !okK || !okV {
		return View{}, fmt.Errorf("%w: %skey_pages or %svalue_pages missing", ErrSnapshot, prefix, prefix)
	}
	shape := []int{meta.NumKVHeads, meta.NumPagesPerLayer, meta.PageSize, meta.KVHeadDimSize}
	if !k.HasShape(shape...) || !val.HasShape(shape...) || k.DType() != val.DType() {
		return View{}, fmt.Errorf("%w: pages %s and %s, want two tensors of one dtype with shape %v",
			ErrSnapshot, k, val, shape)
	}
	v, err := NewView(meta, k.DType(), layer)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if v.key, err = rechunk(v.key, k); err != nil {
		return View{}, err
	}
	if v.value, err = rechunk(v.value, val); err != nil {
		return View{}, err
	}
	return v, nil
}

// rechunk copies the dense tensor src into the empty chunked pool, leaving
// all-zero chunks unallocated as a fresh pool has them.
func rechunk(pool, src tensor.Tensor) (tensor.Tensor, error) {
	ce := pool.ChunkLen()
	es := pool.DType().Size()
	all := src.Bytes()
	e := pool.Edit()
	for c := range pool.NumChunks() {
		if allZero(all[c*ce*es : (c+1)*ce*es]) {
			continue
		}
		if err := e.Write(c*ce, src, c*ce, ce); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
		}
	}
	return e.Tensor(), nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
