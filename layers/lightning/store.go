package lightning

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// States are stored with one storage chunk per batch row (tensor.NewChunked
// with chunkLen = the elements of one row's state). Every write covers whole
// rows, so each chunk is either unallocated (zeros) or fully written, and a
// tensor's visible bytes never change. An update of some rows shares the
// other rows' chunks with the previous version.

// rowLen returns the number of elements of one batch row of shape.
func rowLen(shape []int) int {
	n := 1
	for _, d := range shape[1:] {
		n *= d
	}
	return n
}

// newStore returns a zero-filled state of shape, one chunk per batch row,
// allocated lazily.
func newStore(dtype tensor.DType, shape ...int) (tensor.Tensor, error) {
	return tensor.NewChunked(dtype, rowLen(shape), shape...)
}

// fillStore returns a state of shape holding src's elements, converted to
// dtype (src must have as many elements).
func fillStore(dtype tensor.DType, src tensor.Tensor, shape ...int) (tensor.Tensor, error) {
	st, err := newStore(dtype, shape...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	e := st.Edit()
	if err := e.Write(0, src, 0, st.Len()); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	return e.Tensor(), nil
}

// isStore reports whether t has the store layout for its shape.
func isStore(t tensor.Tensor) bool { return t.Rank() > 0 && t.ChunkLen() == rowLen(t.Shape()) }

// restore returns a decoded tensor in the store layout: t itself when it
// already has it (a decoded tensor is fully written, so sharing it is safe),
// else a copy.
func restore(t tensor.Tensor) (tensor.Tensor, error) {
	if isStore(t) {
		return t, nil
	}
	return fillStore(t.DType(), t, t.Shape()...)
}

// zeroRows returns st with the given rows zeroed (unallocated chunks); the
// other rows share st's storage.
func zeroRows(st tensor.Tensor, rows []int) (tensor.Tensor, error) {
	z, err := tensor.NewChunked(st.DType(), st.ChunkLen(), st.Shape()...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	e := st.Edit()
	for _, r := range rows {
		if err := e.Share(r, z, r, 1); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrOutOfRange, err)
		}
	}
	return e.Tensor(), nil
}

// shareRows returns dst whose rows [slot, slot+src.Dim(0)) are src's rows,
// shared, not copied.
func shareRows(dst, src tensor.Tensor, slot int) (tensor.Tensor, error) {
	e := dst.Edit()
	if err := e.Share(slot, src, 0, src.Dim(0)); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", ErrIncompatible, err)
	}
	return e.Tensor(), nil
}

// checkRows checks that rows are distinct batch rows of a batch of b.
func checkRows(rows []int, b int) error {
	seen := make(map[int]bool, len(rows))
	for _, r := range rows {
		if r < 0 || r >= b {
			return fmt.Errorf("%w: row %d (batch has rows 0..%d)", ErrOutOfRange, r, b-1)
		}
		if seen[r] {
			return fmt.Errorf("%w: row %d listed twice", ErrOutOfRange, r)
		}
		seen[r] = true
	}
	return nil
}
