package tensor

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randomTensor(t *testing.T, d DType, seed uint64, shape ...int) Tensor {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	n := 1
	for _, s := range shape {
		n *= s
	}
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = r.NormFloat64() * 3
	}
	return Must(FromFloat64s(d, vals, shape...))
}

func TestQuantizeInt8WorkedRow(t *testing.T) {
	// amax = 2.54 -> scale = 0.02 (+tiny); codes = round(x/0.02).
	x := Must(FromFloat64s(Float64, []float64{2.54, -1.27, 0.01, 0, 0.03, -2.54}, 1, 6))
	q, err := QuantizeInt8(x)
	require.NoError(t, err)
	assert.Equal(t, []int8{127, -64, 0, 0, 2, -127}, q.Codes) // -63.5 -> -64, 0.5 -> 0, 1.5 -> 2 (half to even)
	assert.Equal(t, []int{1, 1}, q.Scales.Shape())
	assert.InDelta(t, 0.02, q.Scales.At(0, 0), 1e-15)
	dq := q.Dequantize()
	assert.Equal(t, []int{1, 6}, dq.Shape())
	assert.InDelta(t, -1.28, dq.At(0, 1), 1e-12)
}

func TestQuantizeInt8ErrorBound(t *testing.T) {
	for _, d := range []DType{Float32, Float64, BFloat16, Float16} {
		x := randomTensor(t, d, 7, 4, 3, 16)
		q, err := QuantizeInt8(x)
		require.NoError(t, err)
		assert.Equal(t, d, q.DType())
		assert.Equal(t, []int{4, 3, 1}, q.Scales.Shape(), "one scale per last-axis row")
		xs, dq, scales := x.Float64s(), q.Dequantize().Float64s(), q.Scales.Float64s()
		for i := range xs {
			s := scales[i/16]
			// Half a step, plus the dtype rounding of x/scale and of code*scale.
			bound := s/2 + 2*ulp(d, math.Abs(xs[i])+s)
			require.LessOrEqual(t, math.Abs(xs[i]-dq[i]), bound, "%s element %d", d, i)
		}
	}
}

// ulp returns the spacing of dtype d near x.
func ulp(d DType, x float64) float64 {
	bits := map[DType]int{Float32: 23, BFloat16: 7, Float16: 10, Float64: 52}[d]
	_, e := math.Frexp(x)
	return math.Ldexp(1, e-1-bits)
}

func TestQuantizeInt8AllZeroRow(t *testing.T) {
	x := Must(New(BFloat16, 2, 4))
	q, err := QuantizeInt8(x)
	require.NoError(t, err)
	assert.Equal(t, make([]int8, 8), q.Codes)
	assert.Equal(t, BFloat16.Tiny(), q.Scales.At(0, 0), "scale is tiny for an all-zero row")
	assert.Equal(t, make([]float64, 8), q.Dequantize().Float64s())
}

func TestNF4Tables(t *testing.T) {
	for i := 1; i < 16; i++ {
		require.Less(t, NF4Levels[i-1], NF4Levels[i])
		require.Less(t, NF4Levels[i-1], nf4Bounds[i])
		require.Less(t, nf4Bounds[i], NF4Levels[i])
	}
	// Each level maps to its own code; a midpoint goes to the lower code (side="left").
	for i, l := range NF4Levels {
		assert.Equal(t, byte(i), nf4Code(l))
	}
	assert.Equal(t, byte(6), nf4Code(nf4Bounds[7]))
	assert.Equal(t, byte(15), nf4Code(math.NaN()))
	assert.Equal(t, byte(0), nf4Code(-5))
}

func TestQuantizeNF4PackingAndValues(t *testing.T) {
	// One block of 4: absmax 2; normalised [1, -1, 0, 0.5] -> codes [15, 0, 7, 12] (0.4407 is nearer to 0.5 than 0.5626).
	x := Must(FromFloat64s(Float32, []float64{2, -2, 0, 1}, 4))
	q, err := QuantizeNF4(x, 4)
	require.NoError(t, err)
	assert.Equal(t, 4, q.BlockSize)
	assert.Equal(t, []byte{0xF0, 0x7C}, q.Packed, "two codes per byte, the first in the high nibble")
	assert.Equal(t, []float64{2}, q.Absmax.Float64s())
	assert.Equal(t, []float64{2, -2, 0, float64(float32(0.44070982933044434 * 2))}, q.Dequantize().Float64s())
}

func TestQuantizeNF4ErrorBoundAndBlocks(t *testing.T) {
	x := randomTensor(t, Float32, 3, 8, 64)
	q, err := QuantizeNF4(x, 256)
	require.NoError(t, err)
	assert.Equal(t, 64, q.BlockSize, "the effective block shrinks to the last dimension")
	assert.Equal(t, []int{8}, q.Absmax.Shape())
	maxGap := 0.0
	for i := 1; i < 16; i++ {
		maxGap = max(maxGap, NF4Levels[i]-NF4Levels[i-1])
	}
	xs, dq, am := x.Float64s(), q.Dequantize().Float64s(), q.Absmax.Float64s()
	for i := range xs {
		require.LessOrEqual(t, math.Abs(xs[i]-dq[i]), maxGap/2*am[i/64]*(1+1e-6), "element %d", i)
	}
	assert.Equal(t, []int{8, 64}, q.Dequantize().Shape())
}

func TestQuantizeNF4AllZeroBlock(t *testing.T) {
	q, err := QuantizeNF4(Must(New(Float32, 8)), 4)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xFF, 0xFF, 0xFF, 0xFF}, q.Packed, "NaN normalised values land in the last code")
	assert.Equal(t, make([]float64, 8), q.Dequantize().Float64s())
}

func TestQuantizeNF4Errors(t *testing.T) {
	_, err := QuantizeNF4(Must(New(Float32, 2, 6)), 8)
	require.ErrorIs(t, err, ErrQuantization)
	assert.Contains(t, err.Error(), "block size 8 does not divide the 12 elements")
	_, err = QuantizeNF4(Must(New(Float32, 4)), 0)
	require.ErrorIs(t, err, ErrQuantization)
	_, err = QuantizeInt8(Tensor{})
	require.ErrorIs(t, err, ErrQuantization)
}

func TestParseQuantization(t *testing.T) {
	for s, want := range map[string]Quantization{"NONE": None, "8BIT": Int8, "int8": Int8, "NF4": NF4, "nf4": NF4} {
		got, err := ParseQuantization(s)
		require.NoError(t, err)
		assert.Equal(t, want, got)
	}
	_, err := ParseQuantization("fp8")
	require.ErrorIs(t, err, ErrQuantization)
	assert.Contains(t, err.Error(), `"fp8"`)
}
