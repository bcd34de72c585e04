package rowstore

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// RowLen returns the number of elements of one batch row of shape (the
// product of every dimension but the first). shape must not be empty.
func RowLen(shape []int) int {
	n := 1
	for _, d := range shape[1:] {
		n *= d
	}
	return n
}

// New returns a zero-filled state of shape, one chunk per batch row,
// allocated lazily. Errors are tensor.NewChunked's, unwrapped.
func New(dtype tensor.DType, shape ...int) (tensor.Tensor, error) {
	return tensor.NewChunked(dtype, RowLen(shape), shape...)
}

// IsStore reports whether t has the store layout for its shape.
func IsStore(t tensor.Tensor) bool { return t.Rank() > 0 && t.ChunkLen() == RowLen(t.Shape()) }

// Ops are the store operations that can fail, reporting failures with one
// cache package's sentinel errors. Each error is the sentinel wrapped with
// %w, followed by the underlying error's text or the offending values.
type Ops struct {
	// Shape is wrapped by errors about shapes and conversions.
	Shape error
	// OutOfRange is wrapped by errors about batch rows out of range.
	OutOfRange error
	// Incompatible is wrapped by errors about states that cannot be
	// combined (ShareRows).
	Incompatible error
}

// Fill returns a state of shape holding src's elements, converted to dtype
// (src must have as many elements); failures wrap o.Shape.
func (o Ops) Fill(dtype tensor.DType, src tensor.Tensor, shape ...int) (tensor.Tensor, error) {
	st, err := New(dtype, shape...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	e := st.Edit()
	if err := e.Write(0, src, 0, st.Len()); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	return e.Tensor(), nil
}

// Restore returns a decoded tensor in the store layout: t itself when it
// already has it (a decoded tensor is fully written, so sharing it is safe),
// else a copy made by Fill.
func (o Ops) Restore(t tensor.Tensor) (tensor.Tensor, error) {
	if IsStore(t) {
		return t, nil
	}
	return o.Fill(t.DType(), t, t.Shape()...)
}

// ZeroRows returns st with the given rows zeroed (unallocated chunks); the
// other rows share st's storage. A row out of range wraps o.OutOfRange.
func (o Ops) ZeroRows(st tensor.Tensor, rows []int) (tensor.Tensor, error) {
	z, err := tensor.NewChunked(st.DType(), st.ChunkLen(), st.Shape()...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	e := st.Edit()
	for _, r := range rows {
		if err := e.Share(r, z, r, 1); err != nil {
			return tensor.Tensor{}, fmt.Errorf("%w: %v", o.OutOfRange, err)
		}
	}
	return e.Tensor(), nil
}

// ShareRows returns dst whose rows [slot, slot+src.Dim(0)) are src's rows,
// shared, not copied. Both must be stores of the same dtype and row length;
// a mismatch or a range past dst's rows wraps o.Incompatible.
func (o Ops) ShareRows(dst, src tensor.Tensor, slot int) (tensor.Tensor, error) {
	e := dst.Edit()
	if err := e.Share(slot, src, 0, src.Dim(0)); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Incompatible, err)
	}
	return e.Tensor(), nil
}

// CheckRows checks that rows are distinct batch rows of a batch of b; the
// error wraps o.OutOfRange and names the row.
func (o Ops) CheckRows(rows []int, b int) error {
	seen := make(map[int]bool, len(rows))
	for _, r := range rows {
		if r < 0 || r >= b {
			return fmt.Errorf("%w: row %d (batch has rows 0..%d)", o.OutOfRange, r, b-1)
		}
		if seen[r] {
			return fmt.Errorf("%w: row %d listed twice", o.OutOfRange, r)
		}
		seen[r] = true
	}
	return nil
}
