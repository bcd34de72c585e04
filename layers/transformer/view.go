package transformer

import (
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// View is one layer's KV cache: EasyDeL's TransformerCacheView. Key is
// (B, S, key_heads, key_dim), value is (B, S, value_heads, value_dim), both
// of the cache dtype. Index[b] is the number of positions of row b already
// written (the next write position) and Starts[b] the first valid position of
// row b (the number of left-pad tokens); writes never change Starts.
//
// A view made by NewViewStorage may store its keys and values quantized
// (see Storage): each write quantizes only the rows it writes, the stored
// form stays int8 or NF4 across writes, and every read (ConcatenateToCache,
// Key, Value) returns dequantized values in the cache dtype.
//
// The zero View is the empty view (EasyDeL's None entry of a cache); see
// IsEmpty. A View is an immutable value: every update returns a new View,
// and the bytes a View can see (row b, positions below Index()[b]) never
// change, whatever other versions derived from the same storage write.
type View struct {
	// key and value hold the values, or the codes of a quantized view.
	key, value    tensor.Tensor
	index, starts []int32
	meta          Metadata
	layer         int
	hasLayer      bool
	quant         *quantized
}

// chunkPositions returns C, the number of positions of one batch row per
// storage chunk: the largest power of two not above 64 that divides s.
func chunkPositions(s int) int {
	c := 64
	for s%c != 0 {
		c >>= 1
	}
	return c
}

// NewView returns a zero-filled view for meta (EasyDeL's
// TransformerCacheView.init) that stores values of dtype, unquantized:
// NewViewStorage(meta, Storage{DType: dtype}, starts, layerIndex).
func NewView(meta Metadata, dtype tensor.DType, starts []int32, layerIndex *int) (View, error) {
	return NewViewStorage(meta, Storage{DType: dtype}, starts, layerIndex)
}

// checkPositions checks that a (B,) position array has b values in [0, s].
func checkPositions(name string, p []int32, b, s int) error {
	if len(p) != b {
		return fmt.Errorf("%w: %s has %d values, want one per batch row (%d)", ErrShape, name, len(p), b)
	}
	for i, x := range p {
		if x < 0 || int(x) > s {
			return fmt.Errorf("%w: %s[%d] = %d, want a position in [0, %d]", ErrOutOfRange, name, i, x, s)
		}
	}
	return nil
}

// IsEmpty reports whether v is the empty view (EasyDeL's is_empty: key is
// None).
func (v View) IsEmpty() bool { return v.key.IsZero() }

// Key returns the key cache (B, S, key_heads, key_dim) in the cache dtype.
// Positions at or past Index()[b] of row b are unspecified. For an
// unquantized view it is the stored tensor (shared); for a quantized one it
// is a dequantized copy of the positions below Index()[b], with zeros at or
// past it, which costs O(visible positions) (KeyCodes and KeyScales return
// the stored form).
func (v View) Key() tensor.Tensor {
	k, _, err := v.dequantized()
	if err != nil {
		panic(err) // the view's own storage always dequantizes
	}
	return k
}

// Value returns the value cache (B, S, value_heads, value_dim) in the cache
// dtype, as Key does for keys.
func (v View) Value() tensor.Tensor {
	_, val, err := v.dequantized()
	if err != nil {
		panic(err)
	}
	return val
}

// DType returns the cache dtype (0 for the empty view): the dtype of the
// values, also when they are stored quantized.
func (v View) DType() tensor.DType { return v.Storage().DType }

// Index returns a copy of the per-row write positions (B,).
func (v View) Index() []int32 { return slices.Clone(v.index) }

// Starts returns a copy of the per-row first valid positions (B,).
func (v View) Starts() []int32 { return slices.Clone(v.starts) }

// Metadata returns the view's metadata.
func (v View) Metadata() Metadata { return v.meta.clone() }

// LayerIndex returns the view's layer index; ok is false when it has none
// (EasyDeL's layer_index=None).
func (v View) LayerIndex() (layer int, ok bool) {
	if !v.hasLayer {
		return 0, false
	}
	return v.layer, true
}

// String describes the view as EasyDeL's intended repr does:
// "TransformerCacheView(key=bfloat16[B S H D], value=..., layer_index=i)".
func (v View) String() string {
	if v.IsEmpty() {
		return "TransformerCacheView(empty)"
	}
	li := "None"
	if v.hasLayer {
		li = fmt.Sprint(v.layer)
	}
	k, val := v.stores()
	return fmt.Sprintf("TransformerCacheView(key=%s, value=%s, layer_index=%s)", k, val, li)
}

// checkKV validates new key/value vectors (B, q, H, D) against the view and
// returns q.
func (v View) checkKV(key, value tensor.Tensor, q int) error {
	m := v.meta
	for _, c := range []struct {
		name string
		t    tensor.Tensor
		h, d int
	}{{"key", key, m.KeyHeads, m.KeyDim}, {"value", value, m.ValueHeads, m.ValueDim}} {
		if c.t.IsZero() {
			return fmt.Errorf("%w: %s is absent (want a (%d, %d, %d, %d) tensor)", ErrDType, c.name, m.BatchSize, q, c.h, c.d)
		}
		if c.t.Rank() != 4 || c.t.Dim(0) != m.BatchSize || c.t.Dim(1) != q || c.t.Dim(2) != c.h || c.t.Dim(3) != c.d {
			return fmt.Errorf("%w: %s has shape %v, want (batch %d, q %d, heads %d, dim %d)",
				ErrShape, c.name, c.t.Shape(), m.BatchSize, q, c.h, c.d)
		}
	}
	return nil
}

// checkFits checks that q new positions fit every row.
func (v View) checkFits(q int) error {
	s := v.meta.SequenceLength
	for b, i := range v.index {
		if int(i)+q > s {
			return fmt.Errorf("%w: row %d has index %d, writing %d positions needs %d > sequence_length %d",
				ErrOverflow, b, i, q, int(i)+q, s)
		}
	}
	return nil
}

// Append writes q new key and value vectors per row, key (B, q, key_heads,
// key_dim) and value (B, q, value_heads, value_dim), converted to the cache
// dtype, at each row's own index, and returns the view with index advanced
// by q. It is the write half of ConcatenateToCache, without masks: its cost
// is O(B·q·H·D) whatever the sequence length, and it does not change v.
//
// A row whose index[b]+q exceeds S is an error (EasyDeL clamps the write
// start and overwrites the tail).
func (v View) Append(key, value tensor.Tensor) (View, error) {
	if v.IsEmpty() {
		return View{}, fmt.Errorf("%w: Append on an empty view", ErrEmpty)
	}
	q := 0
	if !key.IsZero() && key.Rank() == 4 {
		q = key.Dim(1)
	}
	if err := v.checkKV(key, value, q); err != nil {
		return View{}, err
	}
	if err := v.checkFits(q); err != nil {
		return View{}, err
	}
	return v.write(key, value, q)
}

// write stores the validated vectors: one Editor per K and V, one write
// per row, each appending at the row's tip in place unless another version
// already wrote there (then that chunk alone is copied). A quantized view
// quantizes the written rows, and only them.
func (v View) write(key, value tensor.Tensor, q int) (View, error) {
	m := v.meta
	ks, vs := v.stores()
	kenc, err := ks.Encode(key)
	if err != nil {
		return View{}, fmt.Errorf("%w: key: %v", ErrShape, err)
	}
	venc, err := vs.Encode(value)
	if err != nil {
		return View{}, fmt.Errorf("%w: value: %v", ErrShape, err)
	}
	kr, vr := q*m.KeyHeads, q*m.ValueHeads // rows of D values per batch row
	ke, ve := ks.Edit(), vs.Edit()
	next := v
	next.index = make([]int32, len(v.index))
	for b, i := range v.index {
		pos := b*m.SequenceLength + int(i)
		if err := ke.WriteRows(pos*m.KeyHeads, &kenc, b*kr, 1, kr); err != nil {
			return View{}, fmt.Errorf("%w: key row %d: %v", ErrShape, b, err)
		}
		if err := ve.WriteRows(pos*m.ValueHeads, &venc, b*vr, 1, vr); err != nil {
			return View{}, fmt.Errorf("%w: value row %d: %v", ErrShape, b, err)
		}
		next.index[b] = i + int32(q)
	}
	return next.withStores(ke.Store(), ve.Store()), nil
}

// ConcatOptions are the optional inputs of ConcatenateToCache.
type ConcatOptions struct {
	// CausalMask is (1|B, 1, Lr, Lc) with Lr, Lc >= S; the zero Mask means
	// none. Row b's query i uses row Index()[b]+i.
	CausalMask Mask
	// TokenTypeIDs is (B, T) with T >= q, the types of the chunk's tokens
	// (token t sits at absolute position Index()[b]+t); nil means none. It is
	// used only with a causal mask and q != 1, as in EasyDeL.
	TokenTypeIDs [][]int32
}

// ConcatenateToCache writes a chunk of q new tokens per row into the cache
// and returns what attention needs (EasyDeL's concatenate_to_cache, spec
// section 6.2): the full key and value caches (B, S, H, D) in the cache
// dtype, the boolean mask (B, 1, q, S) and the next view, whose index is
// Index()[b]+q. v itself is not changed.
//
// query is (B, q, Hq, Dq); only its batch and length are used. key is
// (B, q, key_heads, key_dim) and value (B, q, value_heads, value_dim); both
// are converted to the cache dtype (astype). attentionMask is (B, S), or
// (B, 1, q, S) or (B, 1, 1, S); the zero Mask means all positions.
//
// Mask: with old = Index()[b],
//
//	mask[b,0,i,j] = causal[old+i, j] && attn[b,j] && j < old+q
//
// where causal is opts.CausalMask (row b, or row 0 when it has one row),
// OR-ed at columns old+t with the token-type mask (query i and token t
// attend each other when their types are equal and non-zero) when
// opts.TokenTypeIDs is set and q != 1. With no causal mask only the
// attention mask and j < old+q apply, so tokens of one chunk see each other
// (as in EasyDeL).
//
// Deviations from EasyDeL, deliberate:
//  1. Each row writes its q vectors at its own index[b] (continuous batching:
//     rows may hold sequences of different lengths).
//  2. A row with index[b]+q > S is an error naming the row, index, q and S
//     (EasyDeL clamps the write and lets index grow past S).
//  3. Token-type ids are correct for any batch size (a token of type 0 gets
//     no bidirectional attention, row by row) and are placed at the chunk's
//     absolute position index[b] (EasyDeL's broadcast is right only for
//     B == 1 and assumes the chunk starts at position 0).
//  4. The returned key and value are the next view's caches, shared, not
//     copied: positions at or past the next index of a row are masked and
//     their contents are unspecified. For a quantized view (see Storage)
//     they are dequantized copies in the cache dtype instead, with zeros at
//     positions at or past the next index, which costs O(B·index·H·D)
//     (EasyDeL's materialisation costs O(B·S·H·D)); the written rows alone
//     are quantized into the next view, which stays quantized.
//  5. A 2-D attention mask must be (B, S) and a 4-D one (B, 1, q|1, S); any
//     other shape is an error naming it (EasyDeL relies on broadcasting).
//     A zero attentionMask means "attend everywhere" (EasyDeL requires one).
func (v View) ConcatenateToCache(query, key, value tensor.Tensor, attentionMask Mask, opts ConcatOptions) (k, val tensor.Tensor, mask Mask, next View, err error) {
	if v.IsEmpty() {
		return k, val, mask, next, fmt.Errorf("%w: ConcatenateToCache on an empty view", ErrEmpty)
	}
	m := v.meta
	if query.IsZero() || query.Rank() != 4 || query.Dim(0) != m.BatchSize {
		return k, val, mask, next, fmt.Errorf("%w: query has shape %v, want (batch %d, q, heads, dim)", ErrShape, query.Shape(), m.BatchSize)
	}
	q := query.Dim(1)
	if err = v.checkKV(key, value, q); err != nil {
		return k, val, mask, next, err
	}
	if err = v.checkFits(q); err != nil {
		return k, val, mask, next, err
	}
	if mask, err = v.buildMask(q, attentionMask, opts); err != nil {
		return k, val, Mask{}, next, err
	}
	if next, err = v.write(key, value, q); err != nil {
		return k, val, Mask{}, View{}, err
	}
	if k, val, err = next.dequantized(); err != nil {
		return tensor.Tensor{}, tensor.Tensor{}, Mask{}, View{}, err
	}
	return k, val, mask, next, nil
}

// buildMask computes the (B, 1, q, S) mask of ConcatenateToCache for the
// current index (before the write); every row must fit (checkFits).
func (v View) buildMask(q int, attn Mask, opts ConcatOptions) (Mask, error) {
	B, S := v.meta.BatchSize, v.meta.SequenceLength

	// attnRow(b, i) returns row (b, i) of the attention mask; nil means none.
	var attnRow func(b, i int) []bool
	switch {
	case attn.IsZero():
	case attn.valid() != nil:
		return Mask{}, fmt.Errorf("attention mask: %w", attn.valid())
	case attn.Rank() == 2 && attn.Shape[0] == B && attn.Shape[1] == S:
		attnRow = func(b, _ int) []bool { return attn.Data[b*S : (b+1)*S] }
	case attn.Rank() == 4 && attn.Shape[0] == B && attn.Shape[1] == 1 && (attn.Shape[2] == q || attn.Shape[2] == 1) && attn.Shape[3] == S:
		rows := attn.Shape[2]
		attnRow = func(b, i int) []bool {
			r := b*rows + min(i, rows-1)
			return attn.Data[r*S : (r+1)*S]
		}
	default:
		return Mask{}, fmt.Errorf("%w: attention mask has shape %v, want (%d, %d) or (%d, 1, %d|1, %d)", ErrShape, attn.Shape, B, S, B, q, S)
	}

	causal := opts.CausalMask
	hasCausal := !causal.IsZero()
	if hasCausal {
		if err := causal.valid(); err != nil {
			return Mask{}, fmt.Errorf("causal mask: %w", err)
		}
		cs := causal.Shape
		if len(cs) != 4 || (cs[0] != 1 && cs[0] != B) || cs[1] != 1 || cs[2] < S || cs[3] < S {
			return Mask{}, fmt.Errorf("%w: causal mask has shape %v, want (1|%d, 1, Lr, Lc) with Lr, Lc >= %d", ErrShape, cs, B, S)
		}
	}

	tt := opts.TokenTypeIDs
	if tt != nil {
		if len(tt) != B {
			return Mask{}, fmt.Errorf("%w: token_type_ids has %d rows, want batch %d", ErrShape, len(tt), B)
		}
		for b, row := range tt {
			if len(row) != len(tt[0]) || len(row) < q {
				return Mask{}, fmt.Errorf("%w: token_type_ids row %d has %d values (row 0 has %d), want the same T >= q = %d in every row",
					ErrShape, b, len(row), len(tt[0]), q)
			}
		}
	}
	useTT := hasCausal && tt != nil && q != 1

	out := Mask{Shape: []int{B, 1, q, S}, Data: make([]bool, B*q*S)}
	for b := 0; b < B; b++ {
		old := int(v.index[b])
		visible := min(old+q, S) // pad mask: j < old+q
		cb := 0
		if hasCausal && causal.Shape[0] == B {
			cb = b
		}
		for i := 0; i < q; i++ {
			row := out.Data[(b*q+i)*S : (b*q+i+1)*S]
			for j := 0; j < visible; j++ {
				row[j] = true
			}
			if hasCausal {
				lr, lc := causal.Shape[2], causal.Shape[3]
				crow := causal.Data[(cb*lr+old+i)*lc:]
				for j := 0; j < visible; j++ {
					row[j] = crow[j]
				}
				if useTT {
					ti := tt[b][i]
					for t, tj := range tt[b] {
						if j := old + t; j < visible && ti != 0 && ti == tj {
							row[j] = true
						}
					}
				}
			}
			if attnRow != nil {
				ar := attnRow(b, i)
				for j := 0; j < visible; j++ {
					row[j] = row[j] && ar[j]
				}
			}
		}
	}
	return out, nil
}

// withIndex returns v with index[slot+k] = index[k]. Rows whose index grows
// are frozen first: the positions [old, new) they now expose are rewritten
// with their current bytes, so no later write from another version can
// change what this version sees (cost O(new-old) per such row).
func (v View) withIndex(index []int32, slot int) (View, error) {
	m := v.meta
	if err := checkSlot(slot, len(index), m.BatchSize); err != nil {
		return View{}, err
	}
	for k, x := range index {
		if x < 0 || int(x) > m.SequenceLength {
			return View{}, fmt.Errorf("%w: index[%d] = %d for slot %d, want a position in [0, %d]",
				ErrOutOfRange, k, x, slot+k, m.SequenceLength)
		}
	}
	next := v
	next.index = slices.Clone(v.index)
	copy(next.index[slot:], index)
	ks, vs := v.stores()
	ke, ve := ks.Edit(), vs.Edit()
	S := m.SequenceLength
	for k, x := range index {
		b := slot + k
		if old := int(v.index[b]); int(x) > old {
			if err := ke.Freeze(ks, (b*S+old)*m.KeyHeads, (b*S+int(x))*m.KeyHeads); err != nil {
				return View{}, fmt.Errorf("%w: freeze key row %d: %v", ErrShape, b, err)
			}
			if err := ve.Freeze(vs, (b*S+old)*m.ValueHeads, (b*S+int(x))*m.ValueHeads); err != nil {
				return View{}, fmt.Errorf("%w: freeze value row %d: %v", ErrShape, b, err)
			}
		}
	}
	return next.withStores(ke.Store(), ve.Store()), nil
}

// withStarts returns v with starts[slot+k] = starts[k].
func (v View) withStarts(starts []int32, slot int) (View, error) {
	m := v.meta
	if err := checkSlot(slot, len(starts), m.BatchSize); err != nil {
		return View{}, err
	}
	for k, x := range starts {
		if x < 0 || int(x) > m.SequenceLength {
			return View{}, fmt.Errorf("%w: starts[%d] = %d for slot %d, want a position in [0, %d]",
				ErrOutOfRange, k, x, slot+k, m.SequenceLength)
		}
	}
	next := v
	next.starts = slices.Clone(v.starts)
	copy(next.starts[slot:], starts)
	return next, nil
}

// checkSlot checks that rows [slot, slot+n) exist in a batch of b rows.
func checkSlot(slot, n, b int) error {
	if slot < 0 || slot+n > b {
		return fmt.Errorf("%w: slot %d with %d rows needs rows [%d, %d), batch has %d rows",
			ErrOutOfRange, slot, n, slot, slot+n, b)
	}
	return nil
}
