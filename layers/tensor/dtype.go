package tensor

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType is the element type of a Tensor.
type DType uint8

// The supported element types. The zero DType is invalid. The four float
// types hold values; I8 and U8 hold the codes of quantized storage (int8
// codes, and NF4 codes packed two per byte).
const (
	Float32 DType = iota + 1
	BFloat16
	Float16
	Float64
	I8
	U8
)

var dtypeNames = [...]string{Float32: "float32", BFloat16: "bfloat16", Float16: "float16", Float64: "float64", I8: "int8", U8: "uint8"}

// safetensorsNames are the dtype names of the safetensors header.
var safetensorsNames = [...]string{Float32: "F32", BFloat16: "BF16", Float16: "F16", Float64: "F64", I8: "I8", U8: "U8"}

// Valid reports whether d is one of the supported dtypes.
func (d DType) Valid() bool { return d >= Float32 && d <= U8 }

// IsFloat reports whether d is one of the four float dtypes (values, as
// opposed to quantization codes).
func (d DType) IsFloat() bool { return d >= Float32 && d <= Float64 }

// Size returns the number of bytes of one element; 0 for an invalid dtype.
func (d DType) Size() int {
	switch d {
	case Float32:
		return 4
	case BFloat16, Float16:
		return 2
	case Float64:
		return 8
	case I8, U8:
		return 1
	}
	return 0
}

// String returns the NumPy name of the dtype ("bfloat16", ...).
func (d DType) String() string {
	if d.Valid() {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// SafetensorsName returns the dtype's name in a safetensors header ("BF16", ...).
func (d DType) SafetensorsName() string {
	if d.Valid() {
		return safetensorsNames[d]
	}
	return d.String()
}

// ParseDType parses a NumPy name ("float32", "bfloat16", "float16",
// "float64", "int8", "uint8") or a safetensors name ("F32", "BF16", "F16",
// "F64", "I8", "U8").
func ParseDType(s string) (DType, error) {
	for d := Float32; d <= U8; d++ {
		if s == dtypeNames[d] || s == safetensorsNames[d] {
			return d, nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want float32, bfloat16, float16, float64, int8 or uint8)", ErrDType, s)
}

// MarshalText encodes the dtype by its NumPy name.
func (d DType) MarshalText() ([]byte, error) {
	if !d.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrDType, uint8(d))
	}
	return []byte(d.String()), nil
}

// UnmarshalText decodes a dtype name accepted by ParseDType.
func (d *DType) UnmarshalText(b []byte) error {
	v, err := ParseDType(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Tiny returns the smallest positive normal value of the dtype
// (NumPy's finfo(dtype).tiny), as a float64.
func (d DType) Tiny() float64 {
	switch d {
	case Float32, BFloat16:
		return float64(math.Float32frombits(0x00800000))
	case Float16:
		return 6.103515625e-05
	default:
		return 2.2250738585072014e-308
	}
}

// MinValue returns the most negative finite value of the dtype
// (finfo(dtype).min), the value attention kernels use for masked logits.
func (d DType) MinValue() float64 {
	switch d {
	case Float32:
		return -math.MaxFloat32
	case BFloat16:
		return -float64(math.Float32frombits(0x7f7f0000))
	case Float16:
		return -65504
	default:
		return -math.MaxFloat64
	}
}

// Round rounds x to the nearest value representable in the dtype
// (round half to even), as an astype would.
func (d DType) Round(x float64) float64 {
	switch d {
	case Float32:
		return float64(float32(x))
	case BFloat16:
		if a := math.Abs(x); a >= 0x1p-126 && a < 0x1.fep127 {
			return roundMantissa(x, 7)
		}
		return float64(bf16ToF32(f64ToBF16(x)))
	case Float16:
		if a := math.Abs(x); a >= 0x1p-14 && a < 0x1.ffcp15 {
			return roundMantissa(x, 10)
		}
		return float64(float16.Frombits(f64ToF16(x)).Float32())
	case I8:
		return saturate(x, -128, 127)
	case U8:
		return saturate(x, 0, 255)
	}
	return x
}

// roundMantissa rounds a normal float64 to bits explicit mantissa bits,
// half to even, on its bit pattern: the fast path of Round for values in the
// normal range of the target format (a carry into the exponent is right).
func roundMantissa(x float64, bits uint) float64 {
	drop := 52 - bits
	b := math.Float64bits(x)
	b += (1<<(drop-1) - 1) + (b>>drop)&1
	return math.Float64frombits(b &^ (1<<drop - 1))
}

// saturate rounds x half to even and clamps it to [lo, hi], as a cast of a
// quantization code does; NaN becomes 0.
func saturate(x, lo, hi float64) float64 {
	if x != x {
		return 0
	}
	return min(max(math.RoundToEven(x), lo), hi)
}

// roundToOdd32 converts x to float32 with round-to-odd, so that a second
// rounding to a narrower format (bfloat16, float16) is exact round-to-nearest
// from float64 with no double-rounding error.
func roundToOdd32(x float64) float32 {
	f := float32(x)
	if math.IsNaN(x) || math.IsInf(float64(f), 0) || float64(f) == x {
		return f
	}
	if math.Abs(float64(f)) > math.Abs(x) { // rounded away from zero: step back toward zero
		f = math.Nextafter32(f, 0)
	}
	return math.Float32frombits(math.Float32bits(f) | 1)
}

// f32ToBF16 rounds a float32 to bfloat16 bits, round half to even.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f { // NaN: keep it quiet and NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func f64ToBF16(x float64) uint16 { return f32ToBF16(roundToOdd32(x)) }

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func f64ToF16(x float64) uint16 { return float16.Fromfloat32(roundToOdd32(x)).Bits() }

// get decodes element i of little-endian data of dtype d.
func get(d DType, b []byte, i int) float64 {
	switch d {
	case Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	case BFloat16:
		return float64(bf16ToF32(binary.LittleEndian.Uint16(b[2*i:])))
	case Float16:
		return float64(float16.Frombits(binary.LittleEndian.Uint16(b[2*i:])).Float32())
	case I8:
		return float64(int8(b[i]))
	case U8:
		return float64(b[i])
	default:
		return math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
}

// convert decodes src (dtype sd) into dst (dtype dd), element for element.
// len(src)/sd.Size() elements are converted. The dtype switch happens once
// per call, never per element.
func convert(dst []byte, dd DType, src []byte, sd DType) {
	if dd == sd {
		copy(dst, src)
		return
	}
	n := len(src) / sd.Size()
	le := binary.LittleEndian
	switch {
	case sd == Float32 && dd == BFloat16:
		for i := 0; i < n; i++ {
			le.PutUint16(dst[2*i:], f32ToBF16(math.Float32frombits(le.Uint32(src[4*i:]))))
		}
	case sd == BFloat16 && dd == Float32:
		for i := 0; i < n; i++ {
			le.PutUint32(dst[4*i:], uint32(le.Uint16(src[2*i:]))<<16)
		}
	case sd == Float32 && dd == Float16:
		for i := 0; i < n; i++ {
			le.PutUint16(dst[2*i:], float16.Fromfloat32(math.Float32frombits(le.Uint32(src[4*i:]))).Bits())
		}
	case sd == Float32 && dd == Float64:
		for i := 0; i < n; i++ {
			le.PutUint64(dst[8*i:], math.Float64bits(float64(math.Float32frombits(le.Uint32(src[4*i:])))))
		}
	case sd == Float64 && dd == Float32:
		for i := 0; i < n; i++ {
			le.PutUint32(dst[4*i:], math.Float32bits(float32(math.Float64frombits(le.Uint64(src[8*i:])))))
		}
	case sd == Float64 && dd == BFloat16:
		for i := 0; i < n; i++ {
			le.PutUint16(dst[2*i:], f64ToBF16(math.Float64frombits(le.Uint64(src[8*i:]))))
		}
	case sd == Float64 && dd == Float16:
		for i := 0; i < n; i++ {
			le.PutUint16(dst[2*i:], f64ToF16(math.Float64frombits(le.Uint64(src[8*i:]))))
		}
	default: // the remaining pairs go through float64, which is exact for every source
		for i := 0; i < n; i++ {
			put(dd, dst, i, get(sd, src, i))
		}
	}
}

// put encodes x, rounded to dtype d, as element i of little-endian data.
func put(d DType, b []byte, i int, x float64) {
	switch d {
	case Float32:
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(x)))
	case BFloat16:
		binary.LittleEndian.PutUint16(b[2*i:], f64ToBF16(x))
	case Float16:
		binary.LittleEndian.PutUint16(b[2*i:], f64ToF16(x))
	case I8:
		b[i] = byte(int8(saturate(x, -128, 127)))
	case U8:
		b[i] = byte(saturate(x, 0, 255))
	default:
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
}
