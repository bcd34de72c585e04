package tensor

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// editorIDs hands out editor ids; 0 is never used, so a published chunk or
// node (owner 0 or a retired id) is never mistaken for a private one.
var editorIDs atomic.Uint64

// Editor derives a new Tensor from a base by appending writes, without
// changing anything the base (or any other tensor) has written.
//
// Writes have append semantics, which is what a cache does: each write sets
// a flat element range, and within the chunks it touches, elements after the
// range are unspecified in the result (they read as zeros unless a sibling
// version appended there). A write whose range starts at or past a chunk's
// tip claims the chunk's unwritten tail and writes in place, so appending a
// decode token costs only the token's bytes. A write behind the tip (the
// chunk is shared with a version that wrote further) copies the elements
// before the range into a fresh chunk first: copy-on-write of that chunk
// only. Claims are atomic, so editors working from the same base in
// different goroutines never see each other's data.
//
// An Editor is not safe for concurrent use; call Tensor once, when done.
type Editor struct {
	base   Tensor
	te     tableEditor
	claims []claim // chunks claimed in place, in claim order
	slab   []byte  // backing store for fresh small chunks
}

// claim records that elements [start, end) of chunk ci were claimed in place
// by this editor: nobody else can see or write them.
type claim struct {
	ci         int
	start, end int64
}

// Edit starts deriving a new tensor from t.
func (t Tensor) Edit() *Editor {
	e := &Editor{base: t}
	e.te.id = editorIDs.Add(1)
	if t.t != nil {
		e.te.t = *t.t
	}
	return e
}

// Write sets the n elements starting at flat offset off to the n elements of
// src starting at srcOff, converted to the tensor's dtype.
func (e *Editor) Write(off int, src Tensor, srcOff, n int) error {
	return e.WriteRows(off, src, srcOff, n, n, 1)
}

// WriteRows sets the rows*rowLen elements starting at flat offset off to rows
// of src: row r is the rowLen elements of src starting at srcOff+r*srcStride.
// It is one Write of a strided gather, e.g. one page of one kv head from a
// (tokens, heads, dim) input, converted to the tensor's dtype on the way.
func (e *Editor) WriteRows(off int, src Tensor, srcOff, srcStride, rowLen, rows int) error {
	n := rows * rowLen
	if err := e.base.checkRange(off, n); err != nil {
		return fmt.Errorf("write destination: %w", err)
	}
	if rows < 0 || rowLen < 0 || srcStride < 0 {
		return fmt.Errorf("%w: %d rows of %d elements, source stride %d", ErrRange, rows, rowLen, srcStride)
	}
	if rows > 0 {
		if err := src.checkRange(srcOff, (rows-1)*srcStride+rowLen); err != nil {
			return fmt.Errorf("write source: %w", err)
		}
	}
	if n == 0 {
		return nil
	}
	dd, es := e.base.dtype, e.base.dtype.Size()
	var dense []byte // src's bytes when it is one allocated chunk
	if src.t.n == 1 {
		if c := src.t.get(0); c != nil {
			dense = c.data
		}
	}
	ss := src.dtype.Size()
	e.base.pieces(off, n, func(ci, lo, l, pos int) {
		out := e.writable(ci, lo, lo+l).data[lo*es : (lo+l)*es]
		if dense != nil && pos%rowLen == 0 && l%rowLen == 0 {
			// Whole rows: no index arithmetic per row, and a plain copy when
			// the dtypes agree (the common prefill case).
			s := srcOff + pos/rowLen*srcStride
			for r := 0; r < l/rowLen; r++ {
				dst := out[r*rowLen*es : (r+1)*rowLen*es]
				if src.dtype == dd {
					copy(dst, dense[s*ss:(s+rowLen)*ss])
				} else {
					convert(dst, dd, dense[s*ss:(s+rowLen)*ss], src.dtype)
				}
				s += srcStride
			}
			return
		}
		for i := pos; i < pos+l; {
			r, o := i/rowLen, i%rowLen
			k := min(rowLen-o, pos+l-i)
			s := srcOff + r*srcStride + o
			dst := out[(i-pos)*es : (i-pos+k)*es]
			if dense != nil {
				convert(dst, dd, dense[s*ss:(s+k)*ss], src.dtype)
			} else {
				_ = src.ReadBytes(dst, dd, s)
			}
			i += k
		}
	})
	return nil
}

// writable returns a chunk into which elements [lo, hi) of chunk ci may be
// written without changing any published tensor.
func (e *Editor) writable(ci, lo, hi int) *chunk {
	c := e.te.t.get(ci)
	keep := lo // elements of the old chunk to preserve on copy
	if c != nil {
		if c.owner == e.te.id { // allocated by this editor: private
			if int64(hi) > c.tip.Load() {
				c.tip.Store(int64(hi))
			}
			return c
		}
		if tip := c.tip.Load(); tip <= int64(lo) && c.tip.CompareAndSwap(tip, int64(hi)) {
			e.claims = append(e.claims, claim{ci, tip, int64(hi)})
			return c
		}
		// Behind the tip: fine if the range is inside (or extends) our own claim.
		if k := e.findClaim(ci); k >= 0 {
			cl := &e.claims[k]
			switch {
			case int64(lo) >= cl.start && int64(hi) <= cl.end:
				return c
			case int64(lo) >= cl.start && c.tip.CompareAndSwap(cl.end, int64(hi)):
				cl.end = int64(hi)
				return c
			}
			keep = max(lo, int(cl.end))
			cl.ci = -1 // the copy below replaces the claimed chunk
		}
	}
	// Copy-on-write: a fresh chunk holding the old chunk's first keep elements.
	fresh := &chunk{data: e.alloc(), owner: e.te.id}
	if c != nil && keep > 0 {
		copy(fresh.data, c.data[:keep*e.base.dtype.Size()])
	}
	fresh.tip.Store(int64(max(hi, keep)))
	e.te.set(ci, fresh)
	return fresh
}

func (e *Editor) findClaim(ci int) int {
	for k := len(e.claims) - 1; k >= 0; k-- {
		if e.claims[k].ci == ci {
			return k
		}
	}
	return -1
}

// slabBytes is the size of the blocks small chunks are carved from: one
// allocation serves many pages, which keeps a prefill near copy bandwidth.
const slabBytes = 64 << 10

// alloc returns zeroed storage for one chunk.
func (e *Editor) alloc() []byte {
	size := e.base.ce * e.base.dtype.Size()
	if size > slabBytes/4 || e.base.t.n == 1 { // a dense tensor needs exactly one chunk
		return make([]byte, size)
	}
	if len(e.slab) < size {
		e.slab = make([]byte, slabBytes/size*size)
	}
	b := e.slab[:size:size]
	e.slab = e.slab[size:]
	return b
}

// Share makes chunks [dst, dst+count) of the result the same storage as
// chunks [srcChunk, srcChunk+count) of src, which must have the same dtype and
// chunk length. Nothing is copied; later writes to either side copy on write.
func (e *Editor) Share(dst int, src Tensor, srcChunk, count int) error {
	if src.dtype != e.base.dtype || src.ce != e.base.ce {
		return fmt.Errorf("%w: share %s chunks of %d elements into %s chunks of %d elements",
			ErrShape, src.dtype, src.ce, e.base.dtype, e.base.ce)
	}
	if dst < 0 || count < 0 || dst+count > e.base.NumChunks() || srcChunk < 0 || srcChunk+count > src.NumChunks() {
		return fmt.Errorf("%w: share chunks [%d,%d) of %d into [%d,%d) of %d",
			ErrRange, srcChunk, srcChunk+count, src.NumChunks(), dst, dst+count, e.base.NumChunks())
	}
	for i := 0; i < count; i++ {
		e.te.set(dst+i, src.t.get(srcChunk+i))
		if k := e.findClaim(dst + i); k >= 0 {
			e.claims[k].ci = -1
		}
	}
	return nil
}

// Tensor returns the edited tensor. The Editor must not be used afterwards.
func (e *Editor) Tensor() Tensor {
	t := e.base
	if t.t != nil {
		tt := e.te.t
		t.t = &tt
	}
	e.te.id = editorIDs.Add(1) // published chunks and nodes are no longer private
	return t
}
