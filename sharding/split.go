package sharding

import (
	"bytes"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Extract returns the elements of t inside box (one range per axis) as a
// new dense tensor of the box's shape and t's dtype. A box that covers all
// of t returns t itself (tensors are immutable, so sharing is safe). The
// copy is one strided Editor.WriteRows per index of the axes above the two
// innermost partial ones, so its cost is the box's bytes plus a small
// per-row overhead.
func Extract(t tensor.Tensor, box []Range) (tensor.Tensor, error) {
	if t.IsZero() {
		return tensor.Tensor{}, fmt.Errorf("%w: extract from an absent tensor", ErrShape)
	}
	shape := t.Shape()
	if len(box) != len(shape) {
		return tensor.Tensor{}, fmt.Errorf("%w: box %v has %d ranges for the rank-%d tensor %s", ErrShape, box, len(box), len(shape), t)
	}
	outShape := make([]int, len(shape))
	k := -1 // the innermost axis the box does not cover in full
	for d, r := range box {
		if r.Start < 0 || r.End < r.Start || r.End > shape[d] {
			return tensor.Tensor{}, fmt.Errorf("%w: range %v of axis %d is outside [0, %d) of %s", ErrShape, r, d, shape[d], t)
		}
		outShape[d] = r.Len()
		if r.Start != 0 || r.End != shape[d] {
			k = d
		}
	}
	if k < 0 {
		return t, nil
	}
	out, err := tensor.New(t.DType(), outShape...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %w", ErrShape, err)
	}
	if out.Len() == 0 {
		return out, nil
	}
	strides := rowMajorStrides(shape)
	rowLen := box[k].Len() * strides[k]
	rows, srcStride := 1, 0
	outer := k // axes [0, outer) are iterated one index at a time
	if k > 0 {
		rows, srcStride = box[k-1].Len(), strides[k-1]
		outer = k - 1
	}
	base := box[k].Start * strides[k]
	if k > 0 {
		base += box[k-1].Start * strides[k-1]
	}
	ed := out.Edit()
	idx := make([]int, outer)
	for d := range idx {
		idx[d] = box[d].Start
	}
	dst := 0
	for {
		src := base
		for d, x := range idx {
			src += x * strides[d]
		}
		if err := ed.WriteRows(dst, t, src, srcStride, rowLen, rows); err != nil {
			return tensor.Tensor{}, err
		}
		dst += rows * rowLen
		if !next(idx, box) {
			break
		}
	}
	return ed.Tensor(), nil
}

// next advances idx (the first len(idx) axes of box) in row-major order
// and reports whether it did not wrap around.
func next(idx []int, box []Range) bool {
	for d := len(idx) - 1; d >= 0; d-- {
		idx[d]++
		if idx[d] < box[d].End {
			return true
		}
		idx[d] = box[d].Start
	}
	return false
}

// rowMajorStrides returns the element strides of shape.
func rowMajorStrides(shape []int) []int {
	s := make([]int, len(shape))
	n := 1
	for d := len(shape) - 1; d >= 0; d-- {
		s[d] = n
		n *= shape[d]
	}
	return s
}

// Split cuts t by spec over mesh: one tensor per device, in device order,
// each holding that device's slice (ShardSlices) as a dense tensor of t's
// dtype. Replicas share the primary's tensor value rather than a copy. The
// spec must fit t as it stands (use Correct first).
func Split(t tensor.Tensor, spec Spec, mesh Mesh) ([]tensor.Tensor, error) {
	if t.IsZero() {
		return nil, fmt.Errorf("%w: split an absent tensor", ErrShape)
	}
	sl, err := ShardSlices(t.Shape(), spec, mesh)
	if err != nil {
		return nil, err
	}
	parts := make([]tensor.Tensor, len(sl))
	for i, s := range sl {
		if s.Replica != 0 {
			parts[i] = parts[s.Primary]
			continue
		}
		if parts[i], err = Extract(t, s.Ranges); err != nil {
			return nil, err
		}
	}
	return parts, nil
}

// Join rebuilds the tensor of the given shape from one part per device
// (in device order) cut by spec over mesh: the inverse of Split. Every
// part must be present, have the dtype of parts[0] and the shape of its
// device's slice; each replica must hold the same bytes as its primary,
// or the error wraps ErrReplicaMismatch and names both devices and the
// first differing element. The result is a new dense tensor, except when
// the spec shards nothing: then it is the primary's part itself.
func Join(parts []tensor.Tensor, spec Spec, mesh Mesh, shape []int) (tensor.Tensor, error) {
	sl, err := ShardSlices(shape, spec, mesh)
	if err != nil {
		return tensor.Tensor{}, err
	}
	if len(parts) != len(sl) {
		return tensor.Tensor{}, fmt.Errorf("%w: %d parts for a mesh of %d devices", ErrShape, len(parts), len(sl))
	}
	if parts[0].IsZero() {
		return tensor.Tensor{}, fmt.Errorf("%w: part 0 (device id %d) is absent", ErrShape, sl[0].Device.ID)
	}
	dtype := parts[0].DType()
	for i, s := range sl {
		p := parts[i]
		if p.IsZero() {
			return tensor.Tensor{}, fmt.Errorf("%w: part %d (device id %d) is absent", ErrShape, i, s.Device.ID)
		}
		if p.DType() != dtype {
			return tensor.Tensor{}, fmt.Errorf("%w: part %d (device id %d) is %s, part 0 is %s", ErrShape, i, s.Device.ID, p.DType(), dtype)
		}
		if !p.HasShape(s.Shape()...) {
			return tensor.Tensor{}, fmt.Errorf("%w: part %d (device id %d) has shape %v, want %v (slice %v of %v)",
				ErrShape, i, s.Device.ID, p.Shape(), s.Shape(), s.Ranges, shape)
		}
	}
	primaryOf := make(map[int]int) // shard -> primary device index
	for i, s := range sl {
		if s.Replica == 0 {
			primaryOf[s.Shard] = i
			continue
		}
		if off, same := sameBytes(parts[s.Primary], parts[i]); !same {
			p := sl[s.Primary]
			return tensor.Tensor{}, fmt.Errorf("%w: device %d (id %d) and its replica device %d (id %d) differ at element %d of slice %v",
				ErrReplicaMismatch, p.Index, p.Device.ID, i, s.Device.ID, off, s.Ranges)
		}
	}
	blocks := make([]int, len(shape))
	k := -1 // innermost sharded axis
	for d, e := range spec {
		blocks[d] = 1
		for _, a := range e {
			blocks[d] *= mesh.Size(a)
		}
		if blocks[d] > 1 {
			k = d
		}
	}
	if k < 0 {
		return parts[sl[0].Primary], nil
	}
	out, err := tensor.New(dtype, shape...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %w", ErrShape, err)
	}
	if out.Len() == 0 {
		return out, nil
	}
	// The destination is a sequence of units: one block of axis k with
	// everything inside it. Each unit is contiguous in one part; they are
	// written in ascending order.
	local := make([]int, len(shape)) // a part's shape
	for d := range shape {
		local[d] = shape[d] / blocks[d]
	}
	localStrides := rowMajorStrides(local)
	unit := local[k] * localStrides[k]
	// idx counts over axes 0..k-1 (full indices) and the block of axis k.
	idx := make([]int, k+1)
	lim := make([]int, k+1)
	copy(lim, shape[:k])
	lim[k] = blocks[k]
	ed := out.Edit()
	for dst := 0; dst < out.Len(); dst += unit {
		shard, src := 0, 0
		for d := 0; d < k; d++ {
			shard = shard*blocks[d] + idx[d]/local[d]
			src += idx[d] % local[d] * localStrides[d]
		}
		shard = shard*blocks[k] + idx[k]
		for d := k + 1; d < len(shape); d++ {
			shard *= blocks[d]
		}
		if err := ed.Write(dst, parts[primaryOf[shard]], src, unit); err != nil {
			return tensor.Tensor{}, err
		}
		for d := k; d >= 0; d-- {
			idx[d]++
			if idx[d] < lim[d] {
				break
			}
			idx[d] = 0
		}
	}
	return ed.Tensor(), nil
}

// compareBlock is the number of bytes sameBytes reads at a time.
const compareBlock = 64 << 10

// sameBytes reports whether a and b (same dtype and shape) hold the same
// bytes, and if not the first element where they differ. Tensors that
// share all their chunks are equal without reading them.
func sameBytes(a, b tensor.Tensor) (int, bool) {
	if a.ChunkLen() == b.ChunkLen() && a.NumChunks() == b.NumChunks() {
		shared := true
		for c := 0; c < a.NumChunks() && shared; c++ {
			shared = a.SharesChunk(c, b, c)
		}
		if shared {
			return 0, true
		}
	}
	es := a.DType().Size()
	per := max(compareBlock/es, 1)
	ba, bb := make([]byte, per*es), make([]byte, per*es)
	for off := 0; off < a.Len(); off += per {
		n := min(per, a.Len()-off)
		_ = a.ReadBytes(ba[:n*es], a.DType(), off)
		_ = b.ReadBytes(bb[:n*es], b.DType(), off)
		if !bytes.Equal(ba[:n*es], bb[:n*es]) {
			for e := 0; e < n; e++ {
				if !bytes.Equal(ba[e*es:(e+1)*es], bb[e*es:(e+1)*es]) {
					return off + e, false
				}
			}
		}
	}
	return 0, true
}
