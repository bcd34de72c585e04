package transformer

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// ErrQuantization reports a quantized storage that cannot be built: an
// unknown method, a negative block size, or an NF4 block that does not
// divide the head dim.
var ErrQuantization = errors.New("transformer: bad quantization")

// DefaultNF4BlockSize is the NF4 block a Storage with BlockSize 0 gets:
// EasyDeL's kv_cache_quantization_blocksize default.
const DefaultNF4BlockSize = 64

// Storage is how a cache stores its keys and values: the cache dtype and a
// quantization (EasyDeL's quantizer argument, an EasyQuantizer with
// kv_cache_quantization_method and kv_cache_quantization_blocksize).
//
//   - tensor.None stores the values in DType.
//   - tensor.Int8 stores int8 codes of the values' shape (dtype tensor.I8)
//     and one scale per (b, s, h) row of D values, shape (B, S, H, 1) in
//     DType: EasyDeL's Array8B, symmetric per last axis.
//   - tensor.NF4 stores NF4 codes packed two per byte, high nibble first,
//     shape (B, S, H, ceil(D/2)) (dtype tensor.U8), and one absmax per block
//     of a row, shape (B, S, H, D/block) in DType: EasyDeL's ArrayNF4. The
//     block is min(BlockSize, D), as EasyDeL's min(block_size, shape[-1]),
//     and must divide D.
//
// Deviations from EasyDeL: the stored form stays quantized across any
// number of writes, and each write quantizes only the rows it writes
// (EasyDeL dequantizes the whole cache, writes, and re-quantizes it all on
// every step). An NF4 block that does not divide D is an error when the
// view is created (EasyDeL silently stores the cache unquantized when the
// block does not divide the array's size, and lets blocks straddle rows
// when it divides the size but not D). An odd D packs each row on its own,
// leaving the last low nibble of a row zero (EasyDeL packs the flattened
// array).
type Storage struct {
	// DType is the cache dtype: of the values when unquantized, of the
	// int8 scales and NF4 absmax otherwise, and of every read
	// (ConcatenateToCache, Key, Value).
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
		return fmt.Errorf("%w: cache dtype %s (want float32, bfloat16, float16 or float64)", ErrDType, s.DType)
	}
	if err := kvquant.Config(s).CheckQuantization(); err != nil {
		return fmt.Errorf("%w: %v", ErrQuantization, err)
	}
	return nil
}

// String describes the storage as "bfloat16" (unquantized), "bfloat16
// 8BIT" (int8 codes, bfloat16 scales) or "float32 NF4/64" (NF4 codes,
// float32 absmax per block of 64).
func (s Storage) String() string { return kvquant.StorageName(s.DType, s.Quantization, s.BlockSize) }

// resolved returns s with the default NF4 block filled in and BlockSize 0
// for the other quantizations.
func (s Storage) resolved() Storage {
	return Storage(kvquant.Config(s).Resolved(DefaultNF4BlockSize))
}

// formats returns the storage formats of keys and values for meta.
func (s Storage) formats(meta Metadata) (k, v kvquant.Format, err error) {
	if k, err = kvquant.NewFormat(s.DType, s.Quantization, s.BlockSize, meta.KeyDim); err != nil {
		return k, v, fmt.Errorf("%w: key cache: %v", ErrQuantization, err)
	}
	if v, err = kvquant.NewFormat(s.DType, s.Quantization, s.BlockSize, meta.ValueDim); err != nil {
		return k, v, fmt.Errorf("%w: value cache: %v", ErrQuantization, err)
	}
	return k, v, nil
}

// quantized is the quantized part of a View, never changed once built; a
// nil *quantized means the view stores values: key and value hold them, in
// the cache dtype. (A pointer keeps View small: views are copied on every
// call.)
type quantized struct {
	st                     Storage // resolved, Quantization != None
	kf, vf                 kvquant.Format
	keyScales, valueScales tensor.Tensor
}

// layout returns the storage layout of a cache of sequence length s and h
// heads: chunks of C positions of one batch row.
func layout(s, h int) kvquant.Layout {
	return kvquant.Layout{RowsPerChunk: chunkPositions(s) * h}
}

// stores returns the view's key and value storage.
func (v View) stores() (k, val kvquant.Store) {
	if v.quant == nil {
		return kvquant.Store{Format: kvquant.Format{DType: v.key.DType(), Width: v.meta.KeyDim}, Data: v.key},
			kvquant.Store{Format: kvquant.Format{DType: v.value.DType(), Width: v.meta.ValueDim}, Data: v.value}
	}
	return kvquant.Store{Format: v.quant.kf, Data: v.key, Scales: v.quant.keyScales},
		kvquant.Store{Format: v.quant.vf, Data: v.value, Scales: v.quant.valueScales}
}

// withStores returns v holding the given key and value storage.
func (v View) withStores(k, val kvquant.Store) View {
	v.key, v.value = k.Data, val.Data
	if v.quant != nil {
		q := *v.quant
		q.keyScales, q.valueScales = k.Scales, val.Scales
		v.quant = &q
	}
	return v
}

// NewViewStorage returns a zero-filled view for meta that stores keys and
// values as st says (EasyDeL's TransformerCacheView.init with a
// quantizer): index all zeros, starts a copy of starts (all zeros when nil;
// otherwise one value per batch row, in [0, sequence_length]), and the
// given layer index (nil for none). Storage is allocated lazily, chunk by
// chunk, on first write. NewView(meta, dtype, ...) is
// NewViewStorage(meta, Storage{DType: dtype}, ...).
func NewViewStorage(meta Metadata, st Storage, starts []int32, layerIndex *int) (View, error) {
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	if err := st.Validate(); err != nil {
		return View{}, err
	}
	st = st.resolved()
	kf, vf, err := st.formats(meta)
	if err != nil {
		return View{}, err
	}
	sts := make([]int32, meta.BatchSize)
	if starts != nil {
		if err := checkPositions("starts", starts, meta.BatchSize, meta.SequenceLength); err != nil {
			return View{}, err
		}
		copy(sts, starts)
	}
	B, S := meta.BatchSize, meta.SequenceLength
	key, err := kvquant.New(kf, layout(S, meta.KeyHeads), B, S, meta.KeyHeads, meta.KeyDim)
	if err != nil {
		return View{}, fmt.Errorf("%w: key cache: %v", ErrShape, err)
	}
	value, err := kvquant.New(vf, layout(S, meta.ValueHeads), B, S, meta.ValueHeads, meta.ValueDim)
	if err != nil {
		return View{}, fmt.Errorf("%w: value cache: %v", ErrShape, err)
	}
	v := View{index: make([]int32, B), starts: sts, meta: meta.clone()}
	if st.Quantization != tensor.None {
		v.quant = &quantized{st: st, kf: kf, vf: vf}
	}
	v = v.withStores(key, value)
	if layerIndex != nil {
		v.layer, v.hasLayer = *layerIndex, true
	}
	return v, nil
}

// InitStorage returns a zero-filled cache for meta whose views store keys
// and values as st says (EasyDeL's init_cache with a quantizer): one view
// per layer, with layer indexes 0..num_hidden_layers-1, and the same starts
// for every layer (all zeros when nil). Init(meta, dtype, starts) is
// InitStorage(meta, Storage{DType: dtype}, starts).
func InitStorage(meta Metadata, st Storage, starts []int32) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	views := make([]View, meta.NumHiddenLayers)
	for l := range views {
		v, err := NewViewStorage(meta, st, starts, &l)
		if err != nil {
			return Cache{}, err
		}
		views[l] = v
	}
	return Cache{views: views}, nil
}

// Storage returns how the view stores keys and values, with the NF4 block
// size resolved (the zero Storage for the empty view).
func (v View) Storage() Storage {
	if v.IsEmpty() {
		return Storage{}
	}
	if v.quant == nil {
		return Storage{DType: v.key.DType()}
	}
	return v.quant.st
}

// IsQuantized reports whether the view stores int8 or NF4 codes.
func (v View) IsQuantized() bool { return v.quant != nil }

// KeyCodes returns the stored key codes: int8 codes (B, S, key_heads,
// key_dim) of dtype tensor.I8, or NF4 codes packed two per byte
// (B, S, key_heads, ceil(key_dim/2)) of dtype tensor.U8; the zero Tensor
// for an unquantized view. Shared, not copied. Positions at or past
// Index()[b] of row b are unspecified.
func (v View) KeyCodes() tensor.Tensor { return v.codes(v.key) }

// KeyScales returns the stored key scales in the cache dtype: one int8
// scale per row, (B, S, key_heads, 1), or the NF4 absmax of each block,
// (B, S, key_heads, key_dim/block); the zero Tensor for an unquantized
// view.
func (v View) KeyScales() tensor.Tensor {
	if v.quant == nil {
		return tensor.Tensor{}
	}
	return v.quant.keyScales
}

// ValueCodes is KeyCodes for the value cache.
func (v View) ValueCodes() tensor.Tensor { return v.codes(v.value) }

// ValueScales is KeyScales for the value cache.
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

// NumBytes returns the bytes of the stored key and value tensors (codes and
// scales for a quantized view) as if every chunk were allocated; index and
// starts are not counted. Unwritten chunks are allocated lazily, so the
// memory in use may be lower. The empty view has 0.
//
// For (B, S, H, D) keys and values: B·S·H·D·2·size(dtype) unquantized;
// B·S·H·(D + size(dtype))·2 for int8; B·S·H·(ceil(D/2) + (D/block)·size(dtype))·2
// for NF4.
func (v View) NumBytes() int {
	if v.IsEmpty() {
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

// visibleSpans returns, for a (B, S, h, d) tensor, the rows of positions
// below index[b] of every batch row b.
func (v View) visibleSpans(h int) []kvquant.Span {
	S := v.meta.SequenceLength
	spans := make([]kvquant.Span, len(v.index))
	for b, i := range v.index {
		spans[b] = kvquant.Span{Lo: b * S * h, Hi: (b*S + int(i)) * h}
	}
	return spans
}

// dequantized returns the view's key and value caches in the cache dtype:
// the stored tensors of an unquantized view (shared), or, for a quantized
// one, new tensors holding the dequantized positions below Index()[b] of
// each row b and zeros after them (cost O(visible positions): chunks past
// the index stay unallocated).
func (v View) dequantized() (k, val tensor.Tensor, err error) {
	if !v.IsQuantized() {
		return v.key, v.value, nil
	}
	ks, vs := v.stores()
	if k, err = ks.Dequantize(v.visibleSpans(v.meta.KeyHeads)...); err != nil {
		return k, val, fmt.Errorf("%w: key cache: %v", ErrShape, err)
	}
	if val, err = vs.Dequantize(v.visibleSpans(v.meta.ValueHeads)...); err != nil {
		return k, val, fmt.Errorf("%w: value cache: %v", ErrShape, err)
	}
	return k, val, nil
}
