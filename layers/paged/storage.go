package paged

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// ErrQuantization reports a quantized storage that cannot be built: an
// unknown method, a negative block size, or an NF4 block that does not
// divide the head dim.
var ErrQuantization = errors.New("paged: bad quantization")

// DefaultNF4BlockSize is the NF4 block a Storage with BlockSize 0 gets:
// EasyDeL's kv_cache_quantization_blocksize default.
const DefaultNF4BlockSize = 64

// Storage is how a view stores its key and value pages: the cache dtype and
// a quantization (EasyDeL's quantizer argument of
// PagedAttentionCacheView.init).
//
//   - tensor.None stores the values in DType.
//   - tensor.Int8 stores int8 codes of the pool's shape (Hkv, N, ps, D)
//     (dtype tensor.I8) and one scale per (head, page, offset) row of D
//     values, shape (Hkv, N, ps, 1) in DType: EasyDeL's Array8B.
//   - tensor.NF4 stores NF4 codes packed two per byte, high nibble first,
//     shape (Hkv, N, ps, ceil(D/2)) (dtype tensor.U8), and one absmax per
//     block of a row, shape (Hkv, N, ps, D/block) in DType: EasyDeL's
//     ArrayNF4. The block is min(BlockSize, D), as EasyDeL's
//     min(block_size, shape[-1]), and must divide D.
//
// Deviations from EasyDeL: pages stay quantized across writes, each write
// quantizing only the rows (tokens of one head) it writes; EasyDeL
// quantizes the pool once at init and its first write materialises it, so
// the cache silently stores dense values from then on. An NF4 block that
// does not divide D is an error when the view is created (EasyDeL silently
// stores the pool unquantized when the block does not divide its size). An
// odd D packs each row on its own, leaving the last low nibble of a row
// zero.
type Storage struct {
	// DType is the cache dtype: of the values when unquantized, of the
	// int8 scales and NF4 absmax otherwise, and of every read (Gather,
	// KeyPages, ValuePages).
	DType tensor.DType
	// Quantization is tensor.None (the zero value), tensor.Int8 or
	// tensor.NF4.
	Quantization tensor.Quantization
	// BlockSize is the NF4 block; 0 means DefaultNF4BlockSize. It is
	// ignored by the other quantizations.
	BlockSize int
}

// Validate checks that DType is a float dtype, that Quantization is known
// and that BlockSize is not negative. Whether an NF4 block fits the head
// dim is checked when a view is created.
func (s Storage) Validate() error {
	if !s.DType.IsFloat() {
		return fmt.Errorf("%w: %s is not a supported KV dtype (want float32, bfloat16, float16 or float64)", ErrDType, s.DType)
	}
	if err := kvquant.Config(s).CheckQuantization(); err != nil {
		return fmt.Errorf("%w: %v", ErrQuantization, err)
	}
	return nil
}

// Resolved returns s as a view stored as s reports it (View.Storage): the
// default NF4 block filled in, and BlockSize 0 for the other
// quantizations. Two storages store pages alike exactly when their
// Resolved forms are equal.
func (s Storage) Resolved() Storage { return s.resolved() }

// resolved returns s with the default NF4 block filled in and BlockSize 0
// for the other quantizations.
func (s Storage) resolved() Storage {
	return Storage(kvquant.Config(s).Resolved(DefaultNF4BlockSize))
}

// quantized is the quantized part of a View, never changed once built; a
// nil *quantized means the view stores values: key and value hold them, in
// the cache dtype. (A pointer keeps View small: views are copied on every
// call.)
type quantized struct {
	st                     Storage // resolved, Quantization != None
	f                      kvquant.Format
	keyScales, valueScales tensor.Tensor
}

// poolLayout is the storage layout of a page pool: one chunk per page and
// head, allocated up front, so a write into a page that was never written
// claims it in place, and only a rewrite of a page that an older version
// holds copies it.
func poolLayout(meta Metadata) kvquant.Layout {
	return kvquant.Layout{RowsPerChunk: meta.PageSize, Preallocated: true}
}

// format returns the row format of the view's pools.
func (v View) format() kvquant.Format {
	if v.quant == nil {
		return kvquant.Format{DType: v.key.DType(), Width: v.meta.KVHeadDimSize}
	}
	return v.quant.f
}

// stores returns the view's key and value pools.
func (v View) stores() (k, val kvquant.Store) {
	f := v.format()
	if v.quant == nil {
		return kvquant.Store{Format: f, Data: v.key}, kvquant.Store{Format: f, Data: v.value}
	}
	return kvquant.Store{Format: f, Data: v.key, Scales: v.quant.keyScales},
		kvquant.Store{Format: f, Data: v.value, Scales: v.quant.valueScales}
}

// withStores returns v holding the given pools.
func (v View) withStores(k, val kvquant.Store) View {
	v.key, v.value = k.Data, val.Data
	if v.quant != nil {
		q := *v.quant
		q.keyScales, q.valueScales = k.Scales, val.Scales
		v.quant = &q
	}
	return v
}

// NewViewStorage returns layer's view of zero pages stored as st says
// (EasyDeL's PagedAttentionCacheView.init with a quantizer). meta must
// pass Validate, st must pass Validate and fit the head dim, and layer must
// be in [0, meta.NumHiddenLayers). The pools are allocated whole, as
// EasyDeL does. NewView(meta, dtype, layer) is
// NewViewStorage(meta, Storage{DType: dtype}, layer).
func NewViewStorage(meta Metadata, st Storage, layer int) (View, error) {
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	if layer < 0 || layer >= meta.NumHiddenLayers {
		return View{}, fmt.Errorf("%w: layer %d of %d layers", ErrOutOfRange, layer, meta.NumHiddenLayers)
	}
	if err := st.Validate(); err != nil {
		return View{}, err
	}
	st = st.resolved()
	f, err := kvquant.NewFormat(st.DType, st.Quantization, st.BlockSize, meta.KVHeadDimSize)
	if err != nil {
		return View{}, fmt.Errorf("%w: %v", ErrQuantization, err)
	}
	key, err := kvquant.New(f, poolLayout(meta), poolShape(meta)...)
	if err != nil {
		return View{}, fmt.Errorf("%w: key page pool: %v", ErrShape, err)
	}
	value, err := kvquant.New(f, poolLayout(meta), poolShape(meta)...)
	if err != nil {
		return View{}, fmt.Errorf("%w: value page pool: %v", ErrShape, err)
	}
	v := View{meta: meta, layer: layer}
	if st.Quantization != tensor.None {
		v.quant = &quantized{st: st, f: f}
	}
	return v.withStores(key, value), nil
}

// InitStorage returns a cache of meta.NumHiddenLayers zero views stored as
// st says (EasyDeL's init_cache with a quantizer). Init(meta, dtype) is
// InitStorage(meta, Storage{DType: dtype}).
func InitStorage(meta Metadata, st Storage) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	views := make([]View, meta.NumHiddenLayers)
	for i := range views {
		v, err := NewViewStorage(meta, st, i)
		if err != nil {
			return Cache{}, err
		}
		views[i] = v
	}
	return Cache{views: views}, nil
}

// Storage returns how the view stores its pages, with the NF4 block size
// resolved (the zero Storage for an absent view).
func (v View) Storage() Storage {
	if v.IsZero() {
		return Storage{}
	}
	if v.quant == nil {
		return Storage{DType: v.key.DType()}
	}
	return v.quant.st
}

// IsQuantized reports whether the view stores int8 or NF4 codes.
func (v View) IsQuantized() bool { return v.quant != nil }

// KeyCodes returns the stored key codes: int8 codes (Hkv, N, ps, D) of
// dtype tensor.I8, or NF4 codes packed two per byte (Hkv, N, ps, ceil(D/2))
// of dtype tensor.U8; the zero Tensor for an unquantized view. Shared, not
// copied.
func (v View) KeyCodes() tensor.Tensor { return v.codes(v.key) }

// KeyScales returns the stored key scales in the cache dtype: one int8
// scale per row, (Hkv, N, ps, 1), or the NF4 absmax of each block,
// (Hkv, N, ps, D/block); the zero Tensor for an unquantized view.
func (v View) KeyScales() tensor.Tensor {
	if v.quant == nil {
		return tensor.Tensor{}
	}
	return v.quant.keyScales
}

// ValueCodes is KeyCodes for the value pages.
func (v View) ValueCodes() tensor.Tensor { return v.codes(v.value) }

// ValueScales is KeyScales for the value pages.
func (v View) ValueScales() tensor.Tensor {
	if v.quant == nil {
		return tensor.Tensor{}
	}
	return v.quant.valueScales
}

func (v View) codes(t tensor.Tensor) tensor.Tensor {
	if !v.IsQuantized() {
		return tensor.Tensor{}
	}
	return t
}

// NumBytes returns the bytes of the view's key and value pools as stored
// (codes and scales for a quantized view); the pools are allocated whole,
// so this is their memory. An absent view has 0.
//
// With R = Hkv·N·ps rows of D values per pool: R·D·size(dtype)·2
// unquantized; R·(D + size(dtype))·2 for int8; R·(ceil(D/2) +
// (D/block)·size(dtype))·2 for NF4.
func (v View) NumBytes() int {
	if v.IsZero() {
		return 0
	}
	k, val := v.stores()
	return k.NumBytes() + val.NumBytes()
}

// NumBytes returns the sum of the views' NumBytes.
func (c Cache) NumBytes() int {
	n := 0
	for _, v := range c.views {
		n += v.NumBytes()
	}
	return n
}

// pools returns the key and value pools in the cache dtype: the stored
// tensors (shared) when unquantized, dequantized copies otherwise.
func (v View) pools() (k, val tensor.Tensor, err error) {
	if !v.IsQuantized() {
		return v.key, v.value, nil
	}
	ks, vs := v.stores()
	all := kvquant.Span{Lo: 0, Hi: ks.Rows()}
	if k, err = ks.Dequantize(all); err != nil {
		return k, val, fmt.Errorf("%w: key pages: %v", ErrShape, err)
	}
	if val, err = vs.Dequantize(all); err != nil {
		return k, val, fmt.Errorf("%w: value pages: %v", ErrShape, err)
	}
	return k, val, nil
}
