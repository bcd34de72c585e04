package tensor

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Tensor is an immutable, row-major array of one dtype. The zero Tensor is
// "absent" (IsZero reports true); it stands for EasyDeL's None arrays.
//
// Copying a Tensor value is cheap: copies share storage, and nothing that a
// Tensor exposes is ever changed in place.
type Tensor struct {
	dtype DType
	shape []int
	n     int // elements
	ce    int // elements per chunk
	t     *table
}

// New returns a zero-filled dense tensor.
func New(dtype DType, shape ...int) (Tensor, error) {
	return NewChunked(dtype, 0, shape...)
}

// NewChunked returns a zero-filled tensor whose storage is split into chunks
// of chunkLen elements (0 means one chunk). chunkLen must divide the number of
// elements. Chunks are allocated on first write, so a large, mostly empty
// cache costs little memory.
func NewChunked(dtype DType, chunkLen int, shape ...int) (Tensor, error) {
	if !dtype.Valid() {
		return Tensor{}, fmt.Errorf("%w: %s", ErrDType, dtype)
	}
	n, err := numElements(shape)
	if err != nil {
		return Tensor{}, err
	}
	if chunkLen == 0 {
		chunkLen = n
	}
	if chunkLen < 0 || (n > 0 && n%chunkLen != 0) {
		return Tensor{}, fmt.Errorf("%w: chunk length %d does not divide %d elements of shape %v", ErrShape, chunkLen, n, shape)
	}
	t := Tensor{dtype: dtype, shape: slices.Clone(shape), n: n, ce: chunkLen}
	if n > 0 {
		t.t = newTable(n / chunkLen)
	}
	return t, nil
}

// NewPreallocated returns a zero-filled tensor like NewChunked, but with
// every chunk allocated up front from one block. A write at the start of a
// never-written chunk then claims it in place instead of allocating: the
// right layout for a fixed budget such as a paged cache's page pool, which
// EasyDeL also allocates whole at init. The memory is touched once here,
// so later writes never wait for the operating system to map it.
func NewPreallocated(dtype DType, chunkLen int, shape ...int) (Tensor, error) {
	t, err := NewChunked(dtype, chunkLen, shape...)
	if err != nil || t.n == 0 {
		return t, err
	}
	size := t.ce * dtype.Size()
	block := make([]byte, t.n*dtype.Size())
	// Touch the whole block now, so that writes never stall on the
	// operating system's first-touch page faults: the budget is committed
	// when the cache is created, not during a step.
	clear(block)
	chunks := make([]chunk, t.t.n)
	var fill func(nd *node, first int) int
	fill = func(nd *node, first int) int {
		for _, kid := range nd.kids {
			first = fill(kid, first)
		}
		for i := range nd.chunks {
			c := &chunks[first+i]
			c.data = block[(first+i)*size : (first+i+1)*size : (first+i+1)*size]
			nd.chunks[i] = c
		}
		return first + len(nd.chunks)
	}
	fill(t.t.root, 0)
	return t, nil
}

// FromBytes returns a dense tensor holding a copy of little-endian data.
func FromBytes(dtype DType, data []byte, shape ...int) (Tensor, error) {
	t, err := New(dtype, shape...)
	if err != nil {
		return Tensor{}, err
	}
	if len(data) != t.n*dtype.Size() {
		return Tensor{}, fmt.Errorf("%w: %d bytes for %d %s elements of shape %v (want %d bytes)",
			ErrShape, len(data), t.n, dtype, shape, t.n*dtype.Size())
	}
	if t.n > 0 {
		t.t.root.chunks[0] = newChunk(slices.Clone(data))
	}
	return t, nil
}

// WrapBytes returns a dense tensor over little-endian data itself, without
// a copy: the tensor takes data over, and the caller must not write to it
// afterwards (tensors are immutable; a later write would change every
// version sharing it). Use FromBytes to keep data.
func WrapBytes(dtype DType, data []byte, shape ...int) (Tensor, error) {
	if !dtype.Valid() {
		return Tensor{}, fmt.Errorf("%w: %s", ErrDType, dtype)
	}
	if len(data)%dtype.Size() != 0 {
		return Tensor{}, fmt.Errorf("%w: %d bytes is not a whole number of %s elements (%d bytes each)",
			ErrShape, len(data), dtype, dtype.Size())
	}
	return fromOwnedBytes(dtype, data, len(data)/dtype.Size(), shape)
}

// FromFloat64s returns a dense tensor of dtype holding data rounded to it.
func FromFloat64s(dtype DType, data []float64, shape ...int) (Tensor, error) {
	b := make([]byte, len(data)*dtype.Size())
	for i, x := range data {
		put(dtype, b, i, x)
	}
	return fromOwnedBytes(dtype, b, len(data), shape)
}

// FromFloat32s returns a dense tensor of dtype holding data rounded to it.
func FromFloat32s(dtype DType, data []float32, shape ...int) (Tensor, error) {
	b := make([]byte, len(data)*dtype.Size())
	src := make([]byte, 4*len(data))
	for i, x := range data {
		put(Float32, src, i, float64(x))
	}
	convert(b, dtype, src, Float32)
	return fromOwnedBytes(dtype, b, len(data), shape)
}

func fromOwnedBytes(dtype DType, b []byte, count int, shape []int) (Tensor, error) {
	if !dtype.Valid() {
		return Tensor{}, fmt.Errorf("%w: %s", ErrDType, dtype)
	}
	n, err := numElements(shape)
	if err != nil {
		return Tensor{}, err
	}
	if n != count {
		return Tensor{}, fmt.Errorf("%w: %d values for shape %v (want %d)", ErrShape, count, shape, n)
	}
	t := Tensor{dtype: dtype, shape: slices.Clone(shape), n: n, ce: n}
	if n > 0 {
		t.t = newTable(1)
		t.t.root.chunks[0] = newChunk(b)
	}
	return t, nil
}

// Must returns t, and panics if err is not nil. It is for tests and
// constant inputs.
func Must(t Tensor, err error) Tensor {
	if err != nil {
		panic(err)
	}
	return t
}

func newChunk(data []byte) *chunk {
	c := &chunk{data: data}
	c.tip.Store(math.MaxInt64 / 2) // fully written
	return c
}

func numElements(shape []int) (int, error) {
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: dimension %d of shape %v is negative", ErrShape, i, shape)
		}
		if d > 0 && n > math.MaxInt32*int(1<<16)/d {
			return 0, fmt.Errorf("%w: shape %v has too many elements", ErrShape, shape)
		}
		n *= d
	}
	return n, nil
}

// IsZero reports whether t is the zero (absent) Tensor.
func (t Tensor) IsZero() bool { return t.dtype == 0 }

// DType returns the element type.
func (t Tensor) DType() DType { return t.dtype }

// Shape returns a copy of the shape.
func (t Tensor) Shape() []int { return slices.Clone(t.shape) }

// Rank returns the number of dimensions.
func (t Tensor) Rank() int { return len(t.shape) }

// Dim returns dimension i; a negative i counts from the end.
func (t Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Len returns the number of elements.
func (t Tensor) Len() int { return t.n }

// ChunkLen returns the number of elements per storage chunk.
func (t Tensor) ChunkLen() int { return t.ce }

// NumBytes returns the size of the elements in bytes.
func (t Tensor) NumBytes() int { return t.n * t.dtype.Size() }

// HasShape reports whether t has exactly the given shape.
func (t Tensor) HasShape(shape ...int) bool { return slices.Equal(t.shape, shape) }

// String describes the tensor as "bfloat16[2 4 8]".
func (t Tensor) String() string {
	if t.IsZero() {
		return "<absent>"
	}
	var b strings.Builder
	b.WriteString(t.dtype.String())
	b.WriteString(fmt.Sprint(t.shape))
	return b.String()
}

// Offset returns the flat row-major offset of the element at idx. It panics
// if idx does not address an element: that is a programmer error.
func (t Tensor) Offset(idx ...int) int {
	if len(idx) != len(t.shape) {
		panic(fmt.Sprintf("tensor: %d indices for shape %v", len(idx), t.shape))
	}
	off := 0
	for i, x := range idx {
		if x < 0 || x >= t.shape[i] {
			panic(fmt.Sprintf("tensor: index %v out of range for shape %v", idx, t.shape))
		}
		off = off*t.shape[i] + x
	}
	return off
}

// At returns the element at idx as a float64.
func (t Tensor) At(idx ...int) float64 {
	off := t.Offset(idx...)
	c := t.t.get(off / t.ce)
	if c == nil {
		return 0
	}
	return get(t.dtype, c.data, off%t.ce)
}

// Reshape returns t with a new shape of the same number of elements. The
// storage is shared.
func (t Tensor) Reshape(shape ...int) (Tensor, error) {
	n, err := numElements(shape)
	if err != nil {
		return Tensor{}, err
	}
	if n != t.n {
		return Tensor{}, fmt.Errorf("%w: cannot reshape %v (%d elements) to %v (%d elements)", ErrShape, t.shape, t.n, shape, n)
	}
	t.shape = slices.Clone(shape)
	return t, nil
}

// pieces calls fn for each chunk-contiguous piece of the flat range
// [off, off+n): chunk index, offset inside the chunk, length and the offset of
// the piece inside the range.
func (t Tensor) pieces(off, n int, fn func(ci, lo, length, pos int)) {
	for pos := 0; pos < n; {
		ci, lo := (off+pos)/t.ce, (off+pos)%t.ce
		l := min(t.ce-lo, n-pos)
		fn(ci, lo, l, pos)
		pos += l
	}
}

func (t Tensor) checkRange(off, n int) error {
	if off < 0 || n < 0 || off+n > t.n {
		return fmt.Errorf("%w: elements [%d, %d) of a tensor of %d elements %v", ErrRange, off, off+n, t.n, t.shape)
	}
	return nil
}

// ReadBytes converts the n = len(dst)/dtype.Size() elements starting at flat
// offset off into dst, as little-endian values of dtype.
func (t Tensor) ReadBytes(dst []byte, dtype DType, off int) error {
	if !dtype.Valid() {
		return fmt.Errorf("%w: %s", ErrDType, dtype)
	}
	n := len(dst) / dtype.Size()
	if err := t.checkRange(off, n); err != nil {
		return err
	}
	ds, ss := dtype.Size(), t.dtype.Size()
	t.pieces(off, n, func(ci, lo, l, pos int) {
		out := dst[pos*ds : (pos+l)*ds]
		c := t.t.get(ci)
		if c == nil {
			clear(out)
			return
		}
		convert(out, dtype, c.data[lo*ss:(lo+l)*ss], t.dtype)
	})
	return nil
}

// zeros backs the unwritten chunks VisitBytes hands out.
var zeros [64 << 10]byte

// VisitBytes calls fn with the little-endian bytes of elements [off, off+n)
// in order, piece by piece as they lie in the tensor's chunks, without
// copying them (never-written elements come as zeros). fn must neither
// write to a piece nor keep it after it returns; an error from fn stops
// the visit and is returned.
func (t Tensor) VisitBytes(off, n int, fn func(piece []byte) error) error {
	if err := t.checkRange(off, n); err != nil {
		return err
	}
	ss := t.dtype.Size()
	var err error
	t.pieces(off, n, func(ci, lo, l, _ int) {
		if err != nil {
			return
		}
		if c := t.t.get(ci); c != nil {
			err = fn(c.data[lo*ss : (lo+l)*ss])
			return
		}
		for left := l * ss; left > 0 && err == nil; {
			k := min(left, len(zeros))
			err = fn(zeros[:k])
			left -= k
		}
	})
	return err
}

// ReadFloat64s decodes len(dst) elements starting at flat offset off.
func (t Tensor) ReadFloat64s(dst []float64, off int) error {
	if err := t.checkRange(off, len(dst)); err != nil {
		return err
	}
	t.pieces(off, len(dst), func(ci, lo, l, pos int) {
		out := dst[pos : pos+l]
		c := t.t.get(ci)
		if c == nil {
			clear(out)
			return
		}
		decodeFloat64s(out, c.data[lo*t.dtype.Size():], t.dtype)
	})
	return nil
}

// ReadFloat32s decodes len(dst) elements starting at flat offset off,
// rounding float64 values to float32.
func (t Tensor) ReadFloat32s(dst []float32, off int) error {
	if err := t.checkRange(off, len(dst)); err != nil {
		return err
	}
	t.pieces(off, len(dst), func(ci, lo, l, pos int) {
		out := dst[pos : pos+l]
		c := t.t.get(ci)
		if c == nil {
			clear(out)
			return
		}
		decodeFloat32s(out, c.data[lo*t.dtype.Size():], t.dtype)
	})
	return nil
}

// Float64s returns all elements as float64s, in row-major order.
func (t Tensor) Float64s() []float64 {
	out := make([]float64, t.n)
	_ = t.ReadFloat64s(out, 0)
	return out
}

// Float32s returns all elements as float32s, in row-major order.
func (t Tensor) Float32s() []float32 {
	out := make([]float32, t.n)
	_ = t.ReadFloat32s(out, 0)
	return out
}

// Bytes returns the elements as contiguous little-endian bytes (a copy).
func (t Tensor) Bytes() []byte {
	out := make([]byte, t.NumBytes())
	if t.n > 0 {
		_ = t.ReadBytes(out, t.dtype, 0)
	}
	return out
}

// AsType returns a dense copy of t converted to dtype (round half to even).
// Converting to the same dtype returns t itself.
func (t Tensor) AsType(dtype DType) (Tensor, error) {
	if dtype == t.dtype {
		return t, nil
	}
	if !dtype.Valid() {
		return Tensor{}, fmt.Errorf("%w: %s", ErrDType, dtype)
	}
	b := make([]byte, t.n*dtype.Size())
	if t.n > 0 {
		_ = t.ReadBytes(b, dtype, 0)
	}
	return fromOwnedBytes(dtype, b, t.n, t.shape)
}

// Equal reports whether t and u have the same dtype, shape and bytes.
func (t Tensor) Equal(u Tensor) bool {
	if t.dtype != u.dtype || !slices.Equal(t.shape, u.shape) {
		return false
	}
	return string(t.Bytes()) == string(u.Bytes())
}

// SharesChunk reports whether chunk i of t and chunk j of u are the same
// storage. Tests use it to check structural sharing.
func (t Tensor) SharesChunk(i int, u Tensor, j int) bool {
	a, b := t.t.get(i), u.t.get(j)
	return a != nil && a == b
}

// NumChunks returns the number of storage chunks.
func (t Tensor) NumChunks() int {
	if t.t == nil {
		return 0
	}
	return t.t.n
}

func decodeFloat64s(dst []float64, src []byte, d DType) {
	switch d {
	case Float64:
		for i := range dst {
			dst[i] = math.Float64frombits(le64(src[8*i:]))
		}
	case Float32:
		for i := range dst {
			dst[i] = float64(math.Float32frombits(le32(src[4*i:])))
		}
	default:
		for i := range dst {
			dst[i] = get(d, src, i)
		}
	}
}

func decodeFloat32s(dst []float32, src []byte, d DType) {
	switch d {
	case Float32:
		for i := range dst {
			dst[i] = math.Float32frombits(le32(src[4*i:]))
		}
	case BFloat16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(le16(src[2*i:])) << 16)
		}
	default:
		for i := range dst {
			dst[i] = float32(get(d, src, i))
		}
	}
}
