package tensor

import (
	"fmt"
	"math"
	"slices"
)

// Quantization selects how a cache stores its values: EasyDeL's
// EasyQuantizer methods NONE, 8BIT and NF4.
type Quantization uint8

// The storage formats.
const (
	// None stores values in the cache dtype.
	None Quantization = iota
	// Int8 stores symmetric int8 codes with one scale per last-axis row.
	Int8
	// NF4 stores 4-bit NormalFloat codes with one absmax per block.
	NF4
)

// String returns EasyDeL's name of the method ("NONE", "8BIT", "NF4").
func (q Quantization) String() string {
	switch q {
	case None:
		return "NONE"
	case Int8:
		return "8BIT"
	case NF4:
		return "NF4"
	}
	return fmt.Sprintf("Quantization(%d)", uint8(q))
}

// ParseQuantization parses "NONE", "8BIT" (or "int8") and "NF4".
func ParseQuantization(s string) (Quantization, error) {
	switch s {
	case "NONE", "none", "":
		return None, nil
	case "8BIT", "8bit", "int8":
		return Int8, nil
	case "NF4", "nf4":
		return NF4, nil
	}
	return 0, fmt.Errorf("%w: unknown quantization_method %q (want NONE, 8BIT or NF4)", ErrQuantization, s)
}

// MarshalText encodes the method by EasyDeL's name.
func (q Quantization) MarshalText() ([]byte, error) { return []byte(q.String()), nil }

// UnmarshalText decodes a name accepted by ParseQuantization.
func (q *Quantization) UnmarshalText(b []byte) error {
	v, err := ParseQuantization(string(b))
	if err != nil {
		return err
	}
	*q = v
	return nil
}

// Int8Tensor is a tensor stored as symmetric int8 codes with one scale per
// row of the last axis (EasyDeL's Array8B): x ≈ code × scale.
type Int8Tensor struct {
	// Codes has one code per element, in row-major order.
	Codes []int8
	// Scales has shape Shape[:-1]+[1] and the source dtype.
	Scales Tensor
	shape  []int
	dtype  DType
}

// Shape returns the shape of the quantized tensor.
func (q Int8Tensor) Shape() []int { return slices.Clone(q.shape) }

// DType returns the dtype that Dequantize produces.
func (q Int8Tensor) DType() DType { return q.dtype }

// QuantizeInt8 quantizes x per last-axis row, as EasyDeL does:
// amax = max|x|, scale = amax/127 + tiny (in x's dtype), code = round(x/scale)
// with round half to even.
func QuantizeInt8(x Tensor) (Int8Tensor, error) {
	if x.Rank() == 0 || x.IsZero() {
		return Int8Tensor{}, fmt.Errorf("%w: int8 needs a tensor of rank >= 1, got %s", ErrQuantization, x)
	}
	d := x.dtype
	w := x.Dim(-1)
	rows := 0
	if w > 0 {
		rows = x.n / w
	}
	codes := make([]int8, x.n)
	scales := make([]float64, rows)
	row := make([]float64, w)
	for r := range rows {
		_ = x.ReadFloat64s(row, r*w)
		scales[r] = QuantizeRowInt8(codes[r*w:(r+1)*w], row, d)
	}
	sshape := append(x.Shape()[:x.Rank()-1], 1)
	st, err := FromFloat64s(d, scales, sshape...)
	if err != nil {
		return Int8Tensor{}, err
	}
	return Int8Tensor{Codes: codes, Scales: st, shape: x.Shape(), dtype: d}, nil
}

// QuantizeRowInt8 quantizes one row into dst and returns its scale, with
// every intermediate rounded to dtype d as EasyDeL's computation in d does.
func QuantizeRowInt8(dst []int8, row []float64, d DType) (scale float64) {
	amax := 0.0
	for _, x := range row {
		if a := math.Abs(x); a > amax { // plain compares: the builtin max's NaN handling costs 3x here
			amax = a
		}
	}
	scale = d.Round(d.Round(amax/127) + d.Tiny())
	for i, x := range row {
		c := math.RoundToEven(d.Round(x / scale))
		if c > 127 {
			c = 127
		} else if c < -127 {
			c = -127
		}
		dst[i] = int8(c)
	}
	return scale
}

// DequantizeRowInt8 writes code × scale, rounded to d, into dst.
func DequantizeRowInt8(dst []float64, codes []int8, scale float64, d DType) {
	for i, c := range codes {
		dst[i] = d.Round(float64(c) * scale)
	}
}

// Dequantize returns code × scale in the source dtype.
func (q Int8Tensor) Dequantize() Tensor {
	w := q.shape[len(q.shape)-1]
	out := make([]float64, len(q.Codes))
	scales := q.Scales.Float64s()
	for r, s := range scales {
		DequantizeRowInt8(out[r*w:(r+1)*w], q.Codes[r*w:(r+1)*w], s, q.dtype)
	}
	return Must(FromFloat64s(q.dtype, out, q.shape...))
}

// NF4Levels is the 16-level NormalFloat-4 table (QLoRA), ascending.
var NF4Levels = [16]float64{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// nf4Bounds are the 16 search boundaries: -inf, then the midpoints between
// consecutive levels. A value's code is (the number of boundaries strictly
// below it) - 1, i.e. searchsorted(bounds, v, side="left") - 1.
var nf4Bounds = func() (b [16]float64) {
	b[0] = math.Inf(-1)
	for i := 1; i < 16; i++ {
		b[i] = (NF4Levels[i-1] + NF4Levels[i]) / 2
	}
	return b
}()

// nf4Code returns the NF4 code of a normalised value. NaN (an all-zero
// block) gets the last code, as searchsorted puts NaN last.
func nf4Code(v float64) byte {
	if v != v {
		return 15
	}
	// Binary search for the number of bounds strictly below v (bounds[0] is
	// -inf, so it is at least 1).
	lo, hi := 1, 16
	for lo < hi {
		mid := (lo + hi) / 2
		if nf4Bounds[mid] < v {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return byte(lo - 1)
}

// NF4Tensor is a tensor stored as 4-bit NormalFloat codes with one absmax
// per block (EasyDeL's ArrayNF4): x ≈ NF4Levels[code] × absmax.
type NF4Tensor struct {
	// Packed holds two codes per byte, the first in the high nibble.
	Packed []byte
	// Absmax has one value per block, in the source dtype.
	Absmax Tensor
	// BlockSize is the effective block: min(requested, last dim, size).
	BlockSize int
	shape     []int
	dtype     DType
}

// Shape returns the shape of the quantized tensor.
func (q NF4Tensor) Shape() []int { return slices.Clone(q.shape) }

// DType returns the dtype that Dequantize produces.
func (q NF4Tensor) DType() DType { return q.dtype }

// QuantizeNF4 quantizes x in blocks of min(blockSize, last dim, size)
// elements of its row-major order, as EasyDeL does.
//
// Deviation: when the number of elements is not a multiple of blockSize
// EasyDeL silently returns the array unquantized; this returns an error that
// names both numbers.
func QuantizeNF4(x Tensor, blockSize int) (NF4Tensor, error) {
	if x.IsZero() || x.Rank() == 0 || x.n == 0 {
		return NF4Tensor{}, fmt.Errorf("%w: nf4 needs a non-empty tensor of rank >= 1, got %s", ErrQuantization, x)
	}
	if blockSize <= 0 {
		return NF4Tensor{}, fmt.Errorf("%w: nf4 block size %d must be positive", ErrQuantization, blockSize)
	}
	if x.n%blockSize != 0 {
		return NF4Tensor{}, fmt.Errorf("%w: nf4 block size %d does not divide the %d elements of %s", ErrQuantization, blockSize, x.n, x)
	}
	block := min(blockSize, x.Dim(-1), x.n)
	if x.n%block != 0 {
		return NF4Tensor{}, fmt.Errorf("%w: nf4 effective block %d does not divide the %d elements of %s", ErrQuantization, block, x.n, x)
	}
	d := x.dtype
	nblocks := x.n / block
	absmax := make([]float64, nblocks)
	packed := make([]byte, (x.n+1)/2)
	QuantizeRowNF4(packed, absmax, x.Float64s(), block, d)
	at, err := FromFloat64s(d, absmax, nblocks)
	if err != nil {
		return NF4Tensor{}, err
	}
	return NF4Tensor{Packed: packed, Absmax: at, BlockSize: block, shape: x.Shape(), dtype: d}, nil
}

// QuantizeRowNF4 quantizes row (a multiple of block values) into packed
// ((len(row)+1)/2 bytes, two codes per byte, high nibble first; it must be
// zeroed) and absmax (len(row)/block values), with the normalisation x/absmax
// rounded to dtype d as EasyDeL's computation in d does.
func QuantizeRowNF4(packed []byte, absmax, row []float64, block int, d DType) {
	for b := range len(row) / block {
		blk := row[b*block : (b+1)*block]
		m := 0.0
		for _, v := range blk {
			if a := math.Abs(v); a > m {
				m = a
			}
		}
		absmax[b] = m
		for i, v := range blk {
			c := nf4Code(d.Round(v / m))
			if k := b*block + i; k%2 == 0 {
				packed[k/2] |= c << 4
			} else {
				packed[k/2] |= c
			}
		}
	}
}

// DequantizeRowNF4 writes NF4Levels[code] × absmax, rounded to d, into dst
// for the len(dst) values of a row quantized by QuantizeRowNF4.
func DequantizeRowNF4(dst []float64, packed []byte, absmax []float64, block int, d DType) {
	for k := range dst {
		c := packed[k/2] >> 4
		if k%2 == 1 {
			c = packed[k/2] & 0x0f
		}
		dst[k] = d.Round(NF4Levels[c] * absmax[k/block])
	}
}

// Code returns the 4-bit code of element k.
func (q NF4Tensor) Code(k int) byte {
	if k%2 == 0 {
		return q.Packed[k/2] >> 4
	}
	return q.Packed[k/2] & 0x0f
}

// Dequantize returns NF4Levels[code] × absmax in the source dtype.
func (q NF4Tensor) Dequantize() Tensor {
	absmax := q.Absmax.Float64s()
	n := 2 * len(q.Packed)
	if len(absmax) > 0 {
		n = len(absmax) * q.BlockSize
	}
	out := make([]float64, n)
	DequantizeRowNF4(out, q.Packed, absmax, q.BlockSize, q.dtype)
	return Must(FromFloat64s(q.dtype, out, q.shape...))
}
