package paged

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// The "format" metadata of the snapshots View.MarshalBinary and
// Cache.MarshalBinary write; UnmarshalView and UnmarshalCache accept only
// their own. (Lower case, unlike the other kinds' formats: the names are
// kept as first written, so older snapshots still decode.)
const (
	ViewSnapshotFormat  = "kvmesh.paged.view/v1"
	CacheSnapshotFormat = "kvmesh.paged.cache/v1"
)

// Snapshot metadata keys and format names. A view snapshot holds the
// tensors "key_pages" and "value_pages"; a cache snapshot holds
// "layers.<i>.key_pages" and "layers.<i>.value_pages" for each present
// layer, and "layers.<i>.metadata" in the string metadata. A quantized
// view's "key_pages" and "value_pages" are its codes (I8, or U8 packed NF4
// codes), with its scales in "key_scales" and "value_scales" and, for NF4,
// its block size under "block_size" in the string metadata.
const (
	viewFormat  = ViewSnapshotFormat
	cacheFormat = CacheSnapshotFormat
	// maxSnapshotLayers bounds the layer count a decoder accepts, so a
	// corrupt count cannot make it allocate without limit.
	maxSnapshotLayers = 1 << 16
)

// MarshalBinary encodes the view losslessly as a tensor.Snapshot
// (safetensors layout): the metadata as JSON under "metadata", the layer
// index under "layer_index", and the page tensors in full, as stored (codes
// and scales for a quantized view).
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
	used := 0                 // present layers
	tensors, metadata := 0, 2 // snapshot entries that belong to a layer, or to the cache
	for i := range views {
		prefix := fmt.Sprintf("layers.%d.", i)
		if _, ok := s.Metadata[prefix+"metadata"]; !ok {
			continue
		}
		if views[i], err = viewFrom(s, prefix, i); err != nil {
			return Cache{}, fmt.Errorf("layer %d: %w", i, err)
		}
		used++
		t, m := views[i].snapshotEntries()
		tensors, metadata = tensors+t, metadata+m
	}
	if len(s.Tensors) != tensors || len(s.Metadata) != metadata || len(s.Int32s) != 0 {
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
	if v.IsQuantized() {
		s.Tensors[prefix+"key_scales"] = v.quant.keyScales
		s.Tensors[prefix+"value_scales"] = v.quant.valueScales
		if v.quant.st.BlockSize != 0 {
			s.Metadata[prefix+"block_size"] = strconv.Itoa(v.quant.st.BlockSize)
		}
	}
	return nil
}

// snapshotEntries returns the number of tensors and of string metadata
// entries addTo stores for v.
func (v View) snapshotEntries() (tensors, metadata int) {
	tensors, metadata = 2, 1
	if v.IsQuantized() {
		tensors += 2
		if v.quant.st.BlockSize != 0 {
			metadata++
		}
	}
	return tensors, metadata
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
	ks, okKS := s.Tensors[prefix+"key_scales"]
	vs, okVS := s.Tensors[prefix+"value_scales"]
	bs, okBS := s.Metadata[prefix+"block_size"]
	st := Storage{DType: k.DType()}
	switch k.DType() {
	case tensor.I8, tensor.U8:
		if !okKS || !okVS || ks.DType() != vs.DType() {
			return View{}, fmt.Errorf("%w: %s codes need %skey_scales and %svalue_scales of one dtype, got %s and %s",
				ErrSnapshot, k.DType(), prefix, prefix, ks, vs)
		}
		st = Storage{DType: ks.DType(), Quantization: tensor.Int8}
		if k.DType() == tensor.U8 {
			st.Quantization = tensor.NF4
			n, err := strconv.Atoi(bs)
			if !okBS || err != nil || n <= 0 {
				return View{}, fmt.Errorf("%w: NF4 codes with %sblock_size %q (want a positive block size)", ErrSnapshot, prefix, bs)
			}
			st.BlockSize = n
		} else if okBS {
			return View{}, fmt.Errorf("%w: %sblock_size %q given with int8 codes", ErrSnapshot, prefix, bs)
		}
	default:
		if okKS || okVS || okBS {
			return View{}, fmt.Errorf("%w: %skey_scales, %svalue_scales or %sblock_size given with %s pages",
				ErrSnapshot, prefix, prefix, prefix, k.DType())
		}
	}
	if err := st.Validate(); err != nil {
		return View{}, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	st = st.resolved()
	f, err := kvquant.NewFormat(st.DType, st.Quantization, st.BlockSize, meta.KVHeadDimSize)
	if err != nil {
		return View{}, fmt.Errorf("%w: %w: %v", ErrSnapshot, ErrQuantization, err)
	}
	shape := poolShape(meta)
	want := slices.Clone(shape)
	want[3] = f.DataPerRow()
	if !k.HasShape(want...) || !val.HasShape(want...) || k.DType() != val.DType() {
		return View{}, fmt.Errorf("%w: pages %s and %s, want two tensors of one dtype with shape %v",
			ErrSnapshot, k, val, want)
	}
	if layer < 0 || layer >= meta.NumHiddenLayers {
		return View{}, fmt.Errorf("%w: %w: layer %d of %d layers", ErrSnapshot, ErrOutOfRange, layer, meta.NumHiddenLayers)
	}
	key, err := kvquant.Assemble(f, poolLayout(meta), shape, k, ks, false)
	if err != nil {
		return View{}, fmt.Errorf("%w: key pages: %v", ErrSnapshot, err)
	}
	value, err := kvquant.Assemble(f, poolLayout(meta), shape, val, vs, false)
	if err != nil {
		return View{}, fmt.Errorf("%w: value pages: %v", ErrSnapshot, err)
	}
	v := View{meta: meta, layer: layer}
	if st.Quantization != tensor.None {
		v.quant = &quantized{st: st, f: f}
	}
	return v.withStores(key, value), nil
}
