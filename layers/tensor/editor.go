package tensor

import (
	"encoding/binary"
	"fmt"
)

func le16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
func le32(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }
func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

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
	base    Tensor
	te      tableEditor
	private map[int]bool     // chunks this editor allocated: not yet visible to anyone
	claims  map[int][2]int64 // chunks claimed in place: [start, end) is ours
}

// Edit starts deriving a new tensor from t.
func (t Tensor) Edit() *Editor {
	e := &Editor{base: t}
	if t.t != nil {
		e.te.t = *t.t
	}
	return e
}

// Write sets the n elements starting at flat offset off to the n elements of
// src starting at srcOff, converted to the tensor's dtype.
func (e *Editor) Write(off int, src Tensor, srcOff, n int) error {
	if err := e.base.checkRange(off, n); err != nil {
		return fmt.Errorf("write destination: %w", err)
	}
	if err := src.checkRange(srcOff, n); err != nil {
		return fmt.Errorf("write source: %w", err)
	}
	es := e.base.dtype.Size()
	e.base.pieces(off, n, func(ci, lo, l, pos int) {
		c := e.writable(ci, lo, lo+l)
		_ = src.ReadBytes(c.data[lo*es:(lo+l)*es], e.base.dtype, srcOff+pos)
	})
	return nil
}

// writable returns a chunk into which elements [lo, hi) of chunk ci may be
// written without changing any published tensor.
func (e *Editor) writable(ci, lo, hi int) *chunk {
	c := e.te.t.get(ci)
	if e.private[ci] {
		if int64(hi) > c.tip.Load() {
			c.tip.Store(int64(hi))
		}
		return c
	}
	keep := lo // elements of the old chunk to preserve on copy
	if c != nil {
		if cl, ok := e.claims[ci]; ok {
			switch {
			case int64(lo) >= cl[0] && int64(hi) <= cl[1]:
				return c
			case int64(lo) >= cl[0] && c.tip.CompareAndSwap(cl[1], int64(hi)):
				e.claims[ci] = [2]int64{cl[0], int64(hi)}
				return c
			}
			keep = max(lo, int(cl[1]))
		} else if tip := c.tip.Load(); tip <= int64(lo) && c.tip.CompareAndSwap(tip, int64(hi)) {
			if e.claims == nil {
				e.claims = make(map[int][2]int64)
			}
			e.claims[ci] = [2]int64{tip, int64(hi)}
			return c
		}
	}
	// Copy-on-write: a fresh chunk holding the old chunk's first keep elements.
	es := e.base.dtype.Size()
	fresh := &chunk{data: make([]byte, e.base.ce*es)}
	if c != nil && keep > 0 {
		copy(fresh.data, c.data[:keep*es])
	}
	fresh.tip.Store(int64(max(hi, keep)))
	e.te.set(ci, fresh)
	if e.private == nil {
		e.private = make(map[int]bool)
	}
	e.private[ci] = true
	delete(e.claims, ci)
	return fresh
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
		delete(e.private, dst+i)
		delete(e.claims, dst+i)
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
	return t
}
