package rowstore

import (
	"fmt"
	"slices"

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

// Clip returns p clipped to [0, k-1] (jnp.clip).
func Clip(p, k int) int { return min(max(p, 0), k-1) }

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

// RollConv applies EasyDeL's update_conv_state to a (B, C, K) conv state: it
// rolls every row left by one along K (column k takes old column
// (k+1) mod K), then writes cols[b, c, j] (a (B, C, L) tensor, converted to
// the state dtype) into column cps[j], for j in order (a later duplicate
// position wins). cps must already be clipped to [0, K-1] (see Clip). Bytes
// are moved as they are, so the update is exact in every dtype. The result
// is a new store; failures wrap o.Shape.
func (o Ops) RollConv(st, cols tensor.Tensor, cps []int) (tensor.Tensor, error) {
	dtype, es := st.DType(), st.DType().Size()
	b, c, k, l := st.Dim(0), st.Dim(1), st.Dim(2), len(cps)
	buf := make([]byte, st.NumBytes())
	if err := st.ReadBytes(buf, dtype, 0); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	col := make([]byte, b*c*l*es)
	if err := cols.ReadBytes(col, dtype, 0); err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	// Roll in place: shift the flat buffer left by one element, then put
	// each window's old first element into its last column (unless a write
	// to column K-1 replaces it anyway).
	w := k * es
	var first []byte
	if !slices.Contains(cps, k-1) {
		first = make([]byte, b*c*es)
		for i := 0; i < b*c; i++ {
			copyElem(first[i*es:], buf[i*w:], es)
		}
	}
	copy(buf, buf[es:])
	for i := 0; i < b*c; i++ {
		d := buf[i*w : (i+1)*w]
		if first != nil {
			copyElem(d[w-es:], first[i*es:], es)
		}
		for j, p := range cps {
			copyElem(d[p*es:], col[(i*l+j)*es:], es)
		}
	}
	src, err := tensor.FromBytes(dtype, buf, b, c, k)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	return o.Fill(dtype, src, b, c, k)
}

// copyElem copies one element of es bytes (cheaper than copy for 2 to 8
// bytes).
func copyElem(dst, src []byte, es int) {
	switch es {
	case 2:
		dst[0], dst[1] = src[0], src[1]
	case 4:
		_, _ = dst[3], src[3]
		dst[0], dst[1], dst[2], dst[3] = src[0], src[1], src[2], src[3]
	default:
		copy(dst[:es], src[:es])
	}
}
