package paged

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// View is one layer's paged KV cache: EasyDeL's PagedAttentionCacheView
// (spec section 7.2). KeyPages and ValuePages have shape
// (num_kv_heads, num_pages_per_layer, page_size, kv_head_dim_size); page 0
// is the dummy page that inactive slots and unused page-table entries
// write to.
//
// A View is an immutable value: WritePrefill and WriteDecodes return a new
// View and leave the receiver, and every other version, unchanged
// (EasyDeL's writes mutate the view). The page tensors are stored in chunks
// of one page of one head (page_size * head_dim elements), so a write
// costs the bytes it writes: appending a token at a page's tip is done in
// place, and a write behind the tip of a page that another version can
// see copies that one page of that head first.
//
// Writes have append semantics within a page (those of tensor.Editor):
// after a write at offset o of a page, the page's offsets after o hold
// unspecified values in the new version, where EasyDeL keeps the old ones.
// Appending, which is all EasyDeL's driver does (prefill chunks in order,
// each decode at its sequence's length), never loses a token. Rewriting a
// position behind a sequence's end loses the later positions of that page
// in the new version (older versions keep them): write them again into the
// new version if they are still needed.
//
// A view made by NewViewStorage may store its pages quantized (see
// Storage): each write quantizes only the rows it writes, the pages stay
// int8 or NF4 across writes, and reads (Gather, KeyPages, ValuePages)
// return dequantized values in the cache dtype.
//
// The zero View is absent (IsZero): an empty Cache holds absent views.
type View struct {
	meta  Metadata
	layer int
	// key and value hold the pages' values, or their codes when quantized.
	key, value tensor.Tensor
	quant      *quantized
}

// NewView returns layer's view of zero pages in dtype, unquantized. The
// dtype must be a float dtype, meta must pass Validate and layer must be in
// [0, meta.NumHiddenLayers). It is NewViewStorage(meta, Storage{DType:
// dtype}, layer).
func NewView(meta Metadata, dtype tensor.DType, layer int) (View, error) {
	return NewViewStorage(meta, Storage{DType: dtype}, layer)
}

// IsZero reports whether v is the zero (absent) View.
func (v View) IsZero() bool { return v.key.IsZero() }

// LayerIndex returns the index of the layer v belongs to.
func (v View) LayerIndex() int { return v.layer }

// Metadata returns the cache metadata.
func (v View) Metadata() Metadata { return v.meta }

// DType returns the cache dtype of the pages: the dtype of the values,
// also when they are stored quantized.
func (v View) DType() tensor.DType { return v.Storage().DType }

// KeyPages returns the key pages, shape (Hkv, N, ps, D), in the cache
// dtype. For an unquantized view it is the stored pool (shared); for a
// quantized one it is a dequantized copy of the whole pool, which reads
// every row, O(Hkv·N·ps·D), and allocates the pages holding non-zero
// values (KeyCodes and KeyScales return the stored form; Gather
// dequantizes only a sequence's pages).
func (v View) KeyPages() tensor.Tensor {
	k, _, err := v.pools()
	if err != nil {
		panic(err) // the view's own pools always dequantize
	}
	return k
}

// ValuePages returns the value pages, shape (Hkv, N, ps, D), in the cache
// dtype, as KeyPages does for keys.
func (v View) ValuePages() tensor.Tensor {
	_, val, err := v.pools()
	if err != nil {
		panic(err)
	}
	return val
}

func (v View) checkPresent() error {
	if v.IsZero() {
		return fmt.Errorf("%w: the view holds no pages", ErrAbsentView)
	}
	return nil
}

// checkKV checks that key and value are (rows, Hkv, D) tensors of one
// dtype; rows < 0 accepts any leading dimension.
func (v View) checkKV(key, value tensor.Tensor, rows int) error {
	if key.IsZero() || value.IsZero() {
		return fmt.Errorf("%w: key %s and value %s must both be present", ErrShape, key, value)
	}
	if key.DType() != value.DType() {
		return fmt.Errorf("%w: key is %s but value is %s", ErrDType, key.DType(), value.DType())
	}
	h, d := v.meta.NumKVHeads, v.meta.KVHeadDimSize
	if key.Rank() != 3 || (rows >= 0 && key.Dim(0) != rows) || key.Dim(1) != h || key.Dim(2) != d {
		want := fmt.Sprintf("(%d, %d, %d)", rows, h, d)
		if rows < 0 {
			want = fmt.Sprintf("(T, %d, %d)", h, d)
		}
		return fmt.Errorf("%w: key has shape %v, want %s", ErrShape, key.Shape(), want)
	}
	if !value.HasShape(key.Shape()...) {
		return fmt.Errorf("%w: value has shape %v, key has %v", ErrShape, value.Shape(), key.Shape())
	}
	return nil
}

// validPage reports whether phys, taken from a page table, is in the pool.
func (v View) validPage(phys int32) bool {
	return phys >= 0 && int(phys) < v.meta.NumPagesPerLayer
}

// pageError reports the out-of-pool page phys found at where.
func (v View) pageError(phys int32, where string) error {
	return fmt.Errorf("%w: page %d at %s (pool has pages 0..%d)", ErrOutOfRange, phys, where, v.meta.NumPagesPerLayer-1)
}

// offset returns the flat element offset of (head h, page phys, slot o)
// in a page tensor.
func (v View) offset(h, phys, o int) int {
	return v.row(h, phys, o) * v.meta.KVHeadDimSize
}

// row returns the index of the row of D values of (head h, page phys,
// slot o) in a page pool.
func (v View) row(h, phys, o int) int {
	return (h*v.meta.NumPagesPerLayer+phys)*v.meta.PageSize + o
}

// encode converts key and value rows to the pools' stored form:
// quantizing them when the view is quantized (each row on its own).
func (v View) encode(f kvquant.Store, key, value tensor.Tensor) (k, val kvquant.Encoded, err error) {
	if k, err = f.Encode(key); err != nil {
		return k, val, fmt.Errorf("%w: key: %v", ErrShape, err)
	}
	if val, err = f.Encode(value); err != nil {
		return k, val, fmt.Errorf("%w: value: %v", ErrShape, err)
	}
	return k, val, nil
}

// WritePrefill writes one sequence's prefill chunk, key and value of shape
// (T, Hkv, D), into its pages: EasyDeL's write_prefill_to_cache. The
// inputs are converted to the cache dtype (EasyDeL's astype); key and
// value must have the same dtype.
//
// Token t of the chunk sits at absolute position start+t, where start is
// m.PrefillPosition[0] (0 when PrefillPosition is nil); position p is
// stored in page m.PrefillPageTable[p/ps] at offset p%ps. The positions of
// the real tokens (those below m.PrefillLength) must be start, start+1, ...
//
// Deviations from EasyDeL, which supports only a chunk at position 0 with
// T a multiple of ps: the chunk may start at any position (chunked prefill)
// and T need not be a multiple of ps; tokens at positions >= PrefillLength
// are padding and are not written (EasyDeL writes the whole last page,
// padding included), so a later decode appends in place; and a position
// past the page table, a page outside [0, N) or a PrefillLength outside
// [start, start+T] is an error instead of a clamped write.
func (v View) WritePrefill(key, value tensor.Tensor, m StepMetadata) (View, error) {
	if err := v.checkPresent(); err != nil {
		return View{}, err
	}
	if err := m.Validate(); err != nil {
		return View{}, err
	}
	if !m.HasPrefill() {
		return View{}, fmt.Errorf("%w: write prefill: the prefill part is absent", ErrStep)
	}
	if err := v.checkKV(key, value, -1); err != nil {
		return View{}, fmt.Errorf("write prefill: %w", err)
	}
	start, end, err := v.prefillSpan(m, key.Dim(0))
	if err != nil {
		return View{}, err
	}
	if end == start {
		return v, nil // only padding
	}
	ks, _ := v.stores()
	kenc, venc, err := v.encode(ks, key, value)
	if err != nil {
		return View{}, fmt.Errorf("write prefill: %w", err)
	}
	return v.writeSpan(&kenc, &venc, m.PrefillPageTable, start, end, "write prefill")
}

// prefillSpan checks a prefill chunk of T rows against m (positions,
// length, page table) and returns the positions [start, end) of its real
// tokens; their pages are in the pool.
func (v View) prefillSpan(m StepMetadata, T int) (start, end int, err error) {
	if T == 0 {
		return 0, 0, fmt.Errorf("%w: write prefill: the chunk has no tokens", ErrShape)
	}
	if m.PrefillPosition != nil {
		if len(m.PrefillPosition) != T {
			return 0, 0, fmt.Errorf("%w: prefill_position has %d entries for a chunk of %d tokens", ErrShape, len(m.PrefillPosition), T)
		}
		start = int(m.PrefillPosition[0])
	}
	if start < 0 {
		return 0, 0, fmt.Errorf("%w: prefill chunk starts at position %d", ErrOutOfRange, start)
	}
	end = int(m.PrefillLength)
	if end < start || end > start+T {
		return 0, 0, fmt.Errorf("%w: prefill_length %d outside [%d, %d] for a chunk of %d tokens at position %d",
			ErrOutOfRange, end, start, start+T, T, start)
	}
	if m.PrefillPosition != nil {
		for t := range end - start {
			if int(m.PrefillPosition[t]) != start+t {
				return 0, 0, fmt.Errorf("%w: prefill_position[%d] is %d, want %d (real tokens sit at consecutive positions)",
					ErrStep, t, m.PrefillPosition[t], start+t)
			}
		}
	}
	if end == start {
		return start, end, nil
	}
	ps := v.meta.PageSize
	table := m.PrefillPageTable
	if last := (end - 1) / ps; last >= len(table) {
		return 0, 0, fmt.Errorf("%w: prefill position %d needs logical page %d, but the page table has %d entries (%d positions)",
			ErrOutOfRange, end-1, last, len(table), len(table)*ps)
	}
	for lp := start / ps; lp <= (end-1)/ps; lp++ {
		if !v.validPage(table[lp]) {
			return 0, 0, v.pageError(table[lp], fmt.Sprintf("prefill_page_table[%d]", lp))
		}
	}
	return start, end, nil
}

// writeSpan writes encoded rows (token-major: row t*Hkv+h is token t of
// head h) of positions [start, end) through table, as prefillSpan checked
// them, and returns the new view.
func (v View) writeSpan(kenc, venc *kvquant.Encoded, table []int32, start, end int, what string) (View, error) {
	h, n, ps := v.meta.NumKVHeads, v.meta.NumPagesPerLayer, v.meta.PageSize
	ks, vs := v.stores()
	ke, ve := ks.Edit(), vs.Edit()
	for lp := start / ps; lp <= (end-1)/ps; lp++ {
		phys := int(table[lp])
		p0, p1 := max(start, lp*ps), min(end, (lp+1)*ps)
		for hi := range h {
			// Positions p0..p1-1 of one head fill a contiguous run of the page.
			dst, src := (hi*n+phys)*ps+p0-lp*ps, (p0-start)*h+hi
			if err := ke.WriteRows(dst, kenc, src, h, p1-p0); err != nil {
				return View{}, fmt.Errorf("%s key: %w", what, err)
			}
			if err := ve.WriteRows(dst, venc, src, h, p1-p0); err != nil {
				return View{}, fmt.Errorf("%s value: %w", what, err)
			}
		}
	}
	return v.withStores(ke.Store(), ve.Store()), nil
}

// WriteDecodes writes one new token per decode slot, key and value of shape
// (Bd, Hkv, D), at the slots' positions m.DecodesPosition through their
// page tables m.DecodesPageTable: EasyDeL's write_decodes_to_cache. The
// inputs are converted to the cache dtype; key and value must have the
// same dtype.
//
// Position p of slot b goes to page DecodesPageTable[b][floorDiv(p, ps)]
// at offset floorMod(p, ps). An inactive slot has position -1, which
// gives logical page -1; like EasyDeL's gather, -1 reads the row's last
// entry, which is 0 for an unused row, so the write lands on the dummy
// page 0 at offset ps-1. When several slots target the same page and
// offset, the slot with the highest index wins (EasyDeL leaves the winner
// unspecified).
//
// Deviations from EasyDeL: a position below -1, a logical page at or past
// the row's length (EasyDeL clamps to the last entry) and a page outside
// [0, N) are errors that name the slot. Only the page-table entries the
// write uses are checked, so the cost does not grow with the table.
func (v View) WriteDecodes(key, value tensor.Tensor, m StepMetadata) (View, error) {
	if err := v.checkPresent(); err != nil {
		return View{}, err
	}
	if err := m.Validate(); err != nil {
		return View{}, err
	}
	if !m.HasDecodes() {
		return View{}, fmt.Errorf("%w: write decodes: the decode part is absent", ErrStep)
	}
	bd := len(m.DecodesPosition)
	if err := v.checkKV(key, value, bd); err != nil {
		return View{}, fmt.Errorf("write decodes: %w", err)
	}
	type target struct{ phys, off int }
	targets := make([]target, bd)
	for b := range bd {
		phys, off, err := v.decodeTarget(m, b)
		if err != nil {
			return View{}, err
		}
		targets[b] = target{phys, off}
	}
	h, n, ps := v.meta.NumKVHeads, v.meta.NumPagesPerLayer, v.meta.PageSize
	ks, vs := v.stores()
	kenc, venc, err := v.encode(ks, key, value)
	if err != nil {
		return View{}, fmt.Errorf("write decodes: %w", err)
	}
	ke, ve := ks.Edit(), vs.Edit()
	for b, t := range targets {
		for hi := range h {
			dst, src := (hi*n+t.phys)*ps+t.off, b*h+hi
			if err := ke.WriteRows(dst, &kenc, src, 1, 1); err != nil {
				return View{}, fmt.Errorf("write decodes key: %w", err)
			}
			if err := ve.WriteRows(dst, &venc, src, 1, 1); err != nil {
				return View{}, fmt.Errorf("write decodes value: %w", err)
			}
		}
	}
	return v.withStores(ke.Store(), ve.Store()), nil
}

// decodeTarget returns the physical page and the offset in it that decode
// slot b writes to.
func (v View) decodeTarget(m StepMetadata, b int) (phys, off int, err error) {
	ps := v.meta.PageSize
	pos := int(m.DecodesPosition[b])
	if pos < -1 {
		return 0, 0, fmt.Errorf("%w: decodes_position[%d] is %d, want >= -1 (-1 marks an inactive slot)", ErrOutOfRange, b, pos)
	}
	row := m.DecodesPageTable[b]
	lp, off := floorDiv(pos, ps), floorMod(pos, ps)
	if lp >= len(row) {
		return 0, 0, fmt.Errorf("%w: decodes_position[%d] is %d, which needs logical page %d, but the page table row has %d entries (%d positions)",
			ErrOutOfRange, b, pos, lp, len(row), len(row)*ps)
	}
	col := lp
	if col < 0 { // position -1: gather normalises index -1 to the last entry
		col += len(row)
	}
	if !v.validPage(row[col]) {
		return 0, 0, v.pageError(row[col], fmt.Sprintf("decodes_page_table[%d][%d] (decodes_position[%d] = %d)", b, col, b, pos))
	}
	return int(row[col]), off, nil
}

// Gather returns the first length positions of a sequence, read through its
// page table, as contiguous key and value tensors of shape (length, Hkv, D)
// in the cache dtype (dequantized when the view is quantized; the cost is
// that of the rows read). It is the reader of the reference attention and
// of tests. A length past the page table or a page outside [0, N) is an
// error.
func (v View) Gather(pageTable []int32, length int) (k, val tensor.Tensor, err error) {
	if err := v.checkGather(pageTable, length); err != nil {
		return k, val, err
	}
	if v.IsQuantized() {
		ks, vs := v.stores()
		if k, err = v.gatherQuantized(ks, pageTable, length); err != nil {
			return tensor.Tensor{}, tensor.Tensor{}, err
		}
		if val, err = v.gatherQuantized(vs, pageTable, length); err != nil {
			return tensor.Tensor{}, tensor.Tensor{}, err
		}
		return k, val, nil
	}
	if k, err = v.gather(v.key, v.meta.KVHeadDimSize, pageTable, length); err != nil {
		return tensor.Tensor{}, tensor.Tensor{}, err
	}
	if val, err = v.gather(v.value, v.meta.KVHeadDimSize, pageTable, length); err != nil {
		return tensor.Tensor{}, tensor.Tensor{}, err
	}
	return k, val, nil
}

// checkGather checks that the view is present and that the first length
// positions of pageTable are in the pool.
func (v View) checkGather(pageTable []int32, length int) error {
	if err := v.checkPresent(); err != nil {
		return err
	}
	ps := v.meta.PageSize
	if length < 0 || length > len(pageTable)*ps {
		return fmt.Errorf("%w: gather length %d, want 0..%d (%d pages of %d positions)",
			ErrOutOfRange, length, len(pageTable)*ps, len(pageTable), ps)
	}
	for lp := 0; lp*ps < length; lp++ {
		if !v.validPage(pageTable[lp]) {
			return v.pageError(pageTable[lp], fmt.Sprintf("page table entry %d", lp))
		}
	}
	return nil
}

// gatherQuantized is gather for a quantized pool: it dequantizes the rows
// it reads.
func (v View) gatherQuantized(pool kvquant.Store, pageTable []int32, length int) (tensor.Tensor, error) {
	h, d, ps := v.meta.NumKVHeads, v.meta.KVHeadDimSize, v.meta.PageSize
	out := make([]float64, length*h*d)
	run := make([]float64, ps*d)
	for lp := 0; lp*ps < length; lp++ {
		n := min(ps, length-lp*ps) // positions of this page to read
		for hi := range h {
			if err := pool.ReadRows(run[:n*d], v.row(hi, int(pageTable[lp]), 0)); err != nil {
				return tensor.Tensor{}, fmt.Errorf("gather: %w", err)
			}
			for o := range n {
				t := lp*ps + o
				copy(out[(t*h+hi)*d:(t*h+hi+1)*d], run[o*d:(o+1)*d])
			}
		}
	}
	return tensor.FromFloat64s(pool.DType, out, length, h, d)
}

// gather reads the first length positions through pageTable from pages,
// a pool component of per elements per row (D values, or a quantized
// pool's codes or scales), bytes as stored, into a (length, Hkv, per)
// tensor.
func (v View) gather(pages tensor.Tensor, per int, pageTable []int32, length int) (tensor.Tensor, error) {
	h, ps := v.meta.NumKVHeads, v.meta.PageSize
	dt := pages.DType()
	es := dt.Size()
	out := make([]byte, length*h*per*es)
	run := make([]byte, ps*per*es)
	for lp := 0; lp*ps < length; lp++ {
		n := min(ps, length-lp*ps) // positions of this page to read
		for hi := range h {
			if err := pages.ReadBytes(run[:n*per*es], dt, v.row(hi, int(pageTable[lp]), 0)*per); err != nil {
				return tensor.Tensor{}, fmt.Errorf("gather: %w", err)
			}
			for o := range n {
				t := lp*ps + o
				copy(out[(t*h+hi)*per*es:], run[o*per*es:(o+1)*per*es])
			}
		}
	}
	return tensor.FromBytes(dt, out, length, h, per)
}
