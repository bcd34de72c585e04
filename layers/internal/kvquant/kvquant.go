package kvquant

import (
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Format is how a Store keeps its rows.
type Format struct {
	// DType is the cache dtype: of the values when unquantized, of the
	// int8 scales and NF4 absmax otherwise, and of what reads return.
	DType tensor.DType
	// Quantization is tensor.None, tensor.Int8 or tensor.NF4.
	Quantization tensor.Quantization
	// Block is the NF4 block (it divides Width); 0 for the other formats.
	Block int
	// Width is the number of values per row (the last axis).
	Width int
}

// NewFormat returns the format of rows of width values of dtype stored as
// q. For NF4 the effective block is min(blockSize, width), as EasyDeL's
// min(block_size, shape[-1]); it must divide width, so that blocks never
// straddle rows.
func NewFormat(dtype tensor.DType, q tensor.Quantization, blockSize, width int) (Format, error) {
	if !dtype.IsFloat() {
		return Format{}, fmt.Errorf("cache dtype %s (want float32, bfloat16, float16 or float64)", dtype)
	}
	if width <= 0 {
		return Format{}, fmt.Errorf("row width %d (want a positive head dim)", width)
	}
	f := Format{DType: dtype, Quantization: q, Width: width}
	switch q {
	case tensor.None, tensor.Int8:
	case tensor.NF4:
		if blockSize <= 0 {
			return Format{}, fmt.Errorf("nf4 block size %d (want a positive block)", blockSize)
		}
		f.Block = min(blockSize, width)
		if width%f.Block != 0 {
			return Format{}, fmt.Errorf("nf4 block size %d does not divide the head dim %d (a row of %d values)", blockSize, width, width)
		}
	default:
		return Format{}, unknownQuantization(q)
	}
	return f, nil
}

// Quantized reports whether the rows are stored as codes and scales.
func (f Format) Quantized() bool { return f.Quantization != tensor.None }

// DataDType returns the dtype of Store.Data: the cache dtype, tensor.I8
// (int8 codes) or tensor.U8 (packed NF4 codes).
func (f Format) DataDType() tensor.DType {
	switch f.Quantization {
	case tensor.Int8:
		return tensor.I8
	case tensor.NF4:
		return tensor.U8
	}
	return f.DType
}

// DataPerRow returns the number of Data elements per row: Width, or
// ceil(Width/2) packed NF4 bytes (an odd width leaves the last low nibble
// of each row zero).
func (f Format) DataPerRow() int {
	if f.Quantization == tensor.NF4 {
		return (f.Width + 1) / 2
	}
	return f.Width
}

// ScalesPerRow returns the number of Scales elements per row: 0, 1 (the
// int8 scale) or Width/Block (the NF4 absmax of each block).
func (f Format) ScalesPerRow() int {
	switch f.Quantization {
	case tensor.Int8:
		return 1
	case tensor.NF4:
		return f.Width / f.Block
	}
	return 0
}

// RowBytes returns the stored bytes of one row.
func (f Format) RowBytes() int {
	return f.DataPerRow()*f.DataDType().Size() + f.ScalesPerRow()*f.DType.Size()
}

// Layout is how a Store's components are chunked.
type Layout struct {
	// RowsPerChunk is the number of rows per storage chunk, the same in
	// Data and Scales; it must divide the number of rows.
	RowsPerChunk int
	// Preallocated allocates every chunk up front (tensor.NewPreallocated),
	// for a fixed budget such as a page pool; otherwise chunks are
	// allocated on first write (tensor.NewChunked).
	Preallocated bool
}

// Store is one tensor of rows in a Format: Data holds the values (or the
// codes) and Scales the int8 scales or NF4 absmax (the zero Tensor when
// unquantized). Data has the shape of the values with the last axis
// replaced by Format.DataPerRow(); Scales has it replaced by
// Format.ScalesPerRow(). A Store is an immutable value.
type Store struct {
	Format
	Data, Scales tensor.Tensor
}

// componentShape returns shape with its last axis replaced by n.
func componentShape(shape []int, n int) []int {
	out := slices.Clone(shape)
	out[len(out)-1] = n
	return out
}

// newComponent returns a zero tensor of dtype with n elements per row.
func newComponent(dtype tensor.DType, l Layout, shape []int, n int) (tensor.Tensor, error) {
	cs := componentShape(shape, n)
	if l.Preallocated {
		return tensor.NewPreallocated(dtype, l.RowsPerChunk*n, cs...)
	}
	return tensor.NewChunked(dtype, l.RowsPerChunk*n, cs...)
}

// New returns a zero store of format f for values of the given shape,
// whose last axis must be f.Width.
func New(f Format, l Layout, shape ...int) (Store, error) {
	if len(shape) == 0 || shape[len(shape)-1] != f.Width {
		return Store{}, fmt.Errorf("shape %v, want a last axis of %d", shape, f.Width)
	}
	s := Store{Format: f}
	var err error
	if s.Data, err = newComponent(f.DataDType(), l, shape, f.DataPerRow()); err != nil {
		return Store{}, err
	}
	if f.Quantized() {
		if s.Scales, err = newComponent(f.DType, l, shape, f.ScalesPerRow()); err != nil {
			return Store{}, err
		}
	}
	return s, nil
}

// IsZero reports whether s is the zero (absent) store.
func (s Store) IsZero() bool { return s.Data.IsZero() }

// Rows returns the number of rows.
func (s Store) Rows() int {
	if s.IsZero() {
		return 0
	}
	return s.Data.Len() / s.DataPerRow()
}

// Shape returns the shape of the values.
func (s Store) Shape() []int {
	if s.IsZero() {
		return nil
	}
	return componentShape(s.Data.Shape(), s.Width)
}

// NumBytes returns the stored bytes: Data's and Scales'.
func (s Store) NumBytes() int {
	if s.IsZero() {
		return 0
	}
	return s.Data.NumBytes() + s.Scales.NumBytes()
}

// String describes the store as "bfloat16[2 4 8 16]", with the
// quantization appended when there is one ("bfloat16[2 4 8 16] 8BIT",
// "float32[...] NF4/64").
func (s Store) String() string {
	if s.IsZero() {
		return "<absent>"
	}
	desc := fmt.Sprintf("%s%v", s.DType, s.Shape())
	switch s.Quantization {
	case tensor.Int8:
		desc += " 8BIT"
	case tensor.NF4:
		desc += fmt.Sprintf(" NF4/%d", s.Block)
	}
	return desc
}

// ReadRows writes the values of the len(dst)/Width rows starting at row
// into dst, dequantized (code × scale, or NF4Levels[code] × absmax, rounded
// to the cache dtype) when the store is quantized.
func (s Store) ReadRows(dst []float64, row int) error {
	w := s.Width
	n := len(dst) / w
	if !s.Quantized() {
		return s.Data.ReadFloat64s(dst[:n*w], row*w)
	}
	dp, sp := s.DataPerRow(), s.ScalesPerRow()
	codes := make([]byte, n*dp)
	if err := s.Data.ReadBytes(codes, s.DataDType(), row*dp); err != nil {
		return err
	}
	scales := make([]float64, n*sp)
	if err := s.Scales.ReadFloat64s(scales, row*sp); err != nil {
		return err
	}
	var i8 []int8
	if s.Quantization == tensor.Int8 {
		i8 = make([]int8, w)
	}
	for r := range n {
		out, c, sc := dst[r*w:(r+1)*w], codes[r*dp:(r+1)*dp], scales[r*sp:(r+1)*sp]
		if s.Quantization == tensor.Int8 {
			for i, b := range c {
				i8[i] = int8(b)
			}
			tensor.DequantizeRowInt8(out, i8, sc[0], s.DType)
		} else {
			tensor.DequantizeRowNF4(out, c, sc, s.Block, s.DType)
		}
	}
	return nil
}

// Span is a range [Lo, Hi) of rows.
type Span struct{ Lo, Hi int }

// Dequantize returns the values as a tensor of the cache dtype and the
// store's value shape. An unquantized store returns Data itself (shared,
// every row as stored). A quantized one returns a new tensor with Data's
// chunk layout holding the dequantized rows of the given spans, and zeros
// elsewhere: only chunks with non-zero values are allocated, so the cost
// is that of the rows in the spans, not of the whole tensor.
func (s Store) Dequantize(spans ...Span) (tensor.Tensor, error) {
	if !s.Quantized() {
		return s.Data, nil
	}
	w := s.Width
	rpc := s.Data.ChunkLen() / s.DataPerRow() // rows per chunk
	out, err := tensor.NewChunked(s.DType, rpc*w, s.Shape()...)
	if err != nil {
		return tensor.Tensor{}, err
	}
	e := out.Edit()
	buf := make([]float64, rpc*w)
	for _, sp := range spans {
		for lo := sp.Lo; lo < sp.Hi; {
			hi := min(sp.Hi, (lo/rpc+1)*rpc) // the rest of lo's chunk
			vals := buf[:(hi-lo)*w]
			if err := s.ReadRows(vals, lo); err != nil {
				return tensor.Tensor{}, err
			}
			if !allZeroFloats(vals) {
				t, err := tensor.FromFloat64s(s.DType, vals, len(vals))
				if err != nil {
					return tensor.Tensor{}, err
				}
				if err := e.Write(lo*w, t, 0, len(vals)); err != nil {
					return tensor.Tensor{}, err
				}
			}
			lo = hi
		}
	}
	return e.Tensor(), nil
}

func allZeroFloats(xs []float64) bool {
	for _, x := range xs {
		if x != 0 {
			return false
		}
	}
	return true
}

// Encoded is a block of source rows converted to a format's stored form,
// ready to be written by Editor.WriteRows.
type Encoded struct {
	f            Format
	data, scales tensor.Tensor
}

// Encode converts src, whose elements are rows of Width values in
// row-major order, to the stored form of f: for an unquantized format, src
// itself (the write converts it to the cache dtype); otherwise each row is
// first rounded to the cache dtype (EasyDeL's astype before quantizing) and
// quantized on its own (tensor.QuantizeRowInt8, tensor.QuantizeRowNF4).
func (f Format) Encode(src tensor.Tensor) (Encoded, error) {
	if src.IsZero() || src.Len()%f.Width != 0 {
		return Encoded{}, fmt.Errorf("source %s is not whole rows of %d values", src, f.Width)
	}
	if !f.Quantized() {
		return Encoded{f: f, data: src}, nil
	}
	w, dp, sp := f.Width, f.DataPerRow(), f.ScalesPerRow()
	rows := src.Len() / w
	codes := make([]byte, rows*dp)
	scales := make([]float64, rows*sp)
	vals := make([]float64, w)
	var i8 []int8
	if f.Quantization == tensor.Int8 {
		i8 = make([]int8, w)
	}
	round := src.DType() != f.DType
	for r := range rows {
		if err := src.ReadFloat64s(vals, r*w); err != nil {
			return Encoded{}, err
		}
		if round {
			for i, x := range vals {
				vals[i] = f.DType.Round(x)
			}
		}
		if f.Quantization == tensor.Int8 {
			scales[r] = tensor.QuantizeRowInt8(i8, vals, f.DType)
			for i, c := range i8 {
				codes[r*dp+i] = byte(c)
			}
		} else {
			tensor.QuantizeRowNF4(codes[r*dp:(r+1)*dp], scales[r*sp:(r+1)*sp], vals, f.Block, f.DType)
		}
	}
	e := Encoded{f: f}
	var err error
	if e.data, err = tensor.FromBytes(f.DataDType(), codes, rows*dp); err != nil {
		return Encoded{}, err
	}
	if e.scales, err = tensor.FromFloat64s(f.DType, scales, rows*sp); err != nil {
		return Encoded{}, err
	}
	return e, nil
}

// Editor derives a new Store from a base, with tensor.Editor's append
// semantics on each component.
type Editor struct {
	f            Format
	data, scales *tensor.Editor
}

// Edit starts deriving a new store from s.
func (s Store) Edit() *Editor {
	e := &Editor{f: s.Format, data: s.Data.Edit()}
	if s.Quantized() {
		e.scales = s.Scales.Edit()
	}
	return e
}

// WriteRows sets rows [dstRow, dstRow+rows) to rows srcRow, srcRow+srcStride,
// ... of src, which must have been encoded for the store's format.
func (e *Editor) WriteRows(dstRow int, src *Encoded, srcRow, srcStride, rows int) error {
	if e.scales == nil && (srcStride == 1 || rows == 1) {
		// Unquantized contiguous rows, every decode write: straight to the
		// values' editor (measurably faster than going through writeRows).
		w := e.f.Width
		return e.data.Write(dstRow*w, src.data, srcRow*w, rows*w)
	}
	if err := writeRows(e.data, dstRow, src.data, srcRow, srcStride, rows, e.f.DataPerRow()); err != nil {
		return err
	}
	if e.scales != nil {
		return writeRows(e.scales, dstRow, src.scales, srcRow, srcStride, rows, e.f.ScalesPerRow())
	}
	return nil
}

// writeRows writes rows of per elements; contiguous source rows are one
// Write.
func writeRows(e *tensor.Editor, dstRow int, src tensor.Tensor, srcRow, srcStride, rows, per int) error {
	if srcStride == 1 || rows == 1 {
		return e.Write(dstRow*per, src, srcRow*per, rows*per)
	}
	return e.WriteRows(dstRow*per, src, srcRow*per, srcStride*per, per, rows)
}

// Share makes chunks [dst, dst+count) of every component the storage of
// chunks [srcChunk, srcChunk+count) of src's, which must have the same
// format and layout. Nothing is copied.
func (e *Editor) Share(dst int, src Store, srcChunk, count int) error {
	if src.Format != e.f {
		return fmt.Errorf("sharing %s chunks into a store of %+v", src, e.f)
	}
	if err := e.data.Share(dst, src.Data, srcChunk, count); err != nil {
		return err
	}
	if e.scales != nil {
		return e.scales.Share(dst, src.Scales, srcChunk, count)
	}
	return nil
}

// Freeze rewrites rows [from, to) of every component of base (the store e
// was started from) with their current bytes, chunk by chunk, skipping
// chunks that were never allocated (they read as zeros, and no other
// version can write into them). Afterwards no write from another version
// can change what the result shows in those rows.
func (e *Editor) Freeze(base Store, from, to int) error {
	if err := freeze(e.data, base.Data, from*e.f.DataPerRow(), to*e.f.DataPerRow()); err != nil {
		return err
	}
	if e.scales != nil {
		return freeze(e.scales, base.Scales, from*e.f.ScalesPerRow(), to*e.f.ScalesPerRow())
	}
	return nil
}

func freeze(e *tensor.Editor, t tensor.Tensor, off, end int) error {
	ce := t.ChunkLen()
	dt := t.DType()
	for off < end {
		ci := off / ce
		n := min(end, (ci+1)*ce) - off
		if t.SharesChunk(ci, t, ci) { // allocated
			buf := make([]byte, n*dt.Size())
			if err := t.ReadBytes(buf, dt, off); err != nil {
				return err
			}
			src, err := tensor.FromBytes(dt, buf, n)
			if err != nil {
				return err
			}
			if err := e.Write(off, src, 0, n); err != nil {
				return err
			}
		}
		off += n
	}
	return nil
}

// Store returns the edited store. The Editor must not be used afterwards.
func (e *Editor) Store() Store {
	s := Store{Format: e.f, Data: e.data.Tensor()}
	if e.scales != nil {
		s.Scales = e.scales.Tensor()
	}
	return s
}

// Assemble returns a store of format f and layout l, of values of the
// given shape, holding data (the values, or the codes) and scales (the
// zero Tensor when unquantized), which must have the store's component
// shapes and dtypes. With share, a component that already has the
// layout's chunk length is used as is (its chunks are shared); any other
// component is copied into fresh storage of the layout, leaving all-zero
// chunks unwritten.
func Assemble(f Format, l Layout, shape []int, data, scales tensor.Tensor, share bool) (Store, error) {
	if len(shape) == 0 || shape[len(shape)-1] != f.Width {
		return Store{}, fmt.Errorf("shape %v, want a last axis of %d", shape, f.Width)
	}
	type component struct {
		name string
		t    tensor.Tensor
		d    tensor.DType
		per  int
	}
	want := []component{{"data", data, f.DataDType(), f.DataPerRow()}}
	if f.Quantized() {
		want = append(want, component{"scales", scales, f.DType, f.ScalesPerRow()})
	} else if !scales.IsZero() {
		return Store{}, fmt.Errorf("scales %s given for unquantized %s values", scales, f.DType)
	}
	s := Store{Format: f}
	for i, w := range want {
		cs := componentShape(shape, w.per)
		if w.t.DType() != w.d || !w.t.HasShape(cs...) {
			return Store{}, fmt.Errorf("%s is %s, want %s%v", w.name, w.t, w.d, cs)
		}
		out := w.t
		if !share || (w.t.ChunkLen() != l.RowsPerChunk*w.per && w.t.Len() > 0) {
			fresh, err := newComponent(w.d, l, shape, w.per)
			if err != nil {
				return Store{}, err
			}
			if out, err = copyNonZero(fresh, w.t); err != nil {
				return Store{}, err
			}
		}
		if i == 0 {
			s.Data = out
		} else {
			s.Scales = out
		}
	}
	return s, nil
}

// copyNonZero writes src's chunks of dst's layout into dst, skipping
// all-zero chunks.
func copyNonZero(dst, src tensor.Tensor) (tensor.Tensor, error) {
	ce := dst.ChunkLen()
	es := dst.DType().Size()
	all := src.Bytes()
	e := dst.Edit()
	for c := range dst.NumChunks() {
		if allZero(all[c*ce*es : (c+1)*ce*es]) {
			continue
		}
		if err := e.Write(c*ce, src, c*ce, ce); err != nil {
			return tensor.Tensor{}, err
		}
	}
	return e.Tensor(), nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// Wrap returns rows already in f's stored form as an Encoded, for writing
// them verbatim (Editor.WriteRows copies them byte for byte): data holds
// DataPerRow elements of DataDType per row, scales ScalesPerRow elements
// of DType per row (the zero Tensor when f is unquantized). Only the
// element counts and dtypes are checked, not the shapes.
func (f Format) Wrap(data, scales tensor.Tensor) (Encoded, error) {
	dp, sp := f.DataPerRow(), f.ScalesPerRow()
	if data.IsZero() || data.DType() != f.DataDType() || data.Len()%dp != 0 {
		return Encoded{}, fmt.Errorf("stored data %s is not whole rows of %d %s elements", data, dp, f.DataDType())
	}
	rows := data.Len() / dp
	if !f.Quantized() {
		if !scales.IsZero() {
			return Encoded{}, fmt.Errorf("scales %s given for unquantized %s rows", scales, f.DType)
		}
		return Encoded{f: f, data: data}, nil
	}
	if scales.IsZero() || scales.DType() != f.DType || scales.Len() != rows*sp {
		return Encoded{}, fmt.Errorf("stored scales %s, want %d rows of %d %s elements", scales, rows, sp, f.DType)
	}
	return Encoded{f: f, data: data, scales: scales}, nil
}
