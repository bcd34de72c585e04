package tensor

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

func TestDTypeNamesAndSizes(t *testing.T) {
	for _, tc := range []struct {
		d          DType
		name, safe string
		size       int
	}{
		{Float32, "float32", "F32", 4},
		{BFloat16, "bfloat16", "BF16", 2},
		{Float16, "float16", "F16", 2},
		{Float64, "float64", "F64", 8},
	} {
		assert.Equal(t, tc.name, tc.d.String())
		assert.Equal(t, tc.safe, tc.d.SafetensorsName())
		assert.Equal(t, tc.size, tc.d.Size())
		for _, s := range []string{tc.name, tc.safe} {
			got, err := ParseDType(s)
			require.NoError(t, err)
			assert.Equal(t, tc.d, got)
		}
	}
	_, err := ParseDType("int4")
	require.ErrorIs(t, err, ErrDType)
	assert.Contains(t, err.Error(), `"int4"`)
	assert.False(t, DType(0).Valid())
	assert.False(t, DType(9).Valid())
}

func TestRoundHalfToEven(t *testing.T) {
	one := 1.0
	for _, tc := range []struct {
		name string
		d    DType
		x    float64
		want float64
	}{
		{"bf16 exact", BFloat16, 1.5, 1.5},
		{"bf16 tie goes to even (down)", BFloat16, one + math.Ldexp(1, -8), 1},
		{"bf16 tie goes to even (up)", BFloat16, one + 3*math.Ldexp(1, -8), one + math.Ldexp(1, -6)},
		// float32(x) would round to the tie 1+2^-8 and then to 1.0: double rounding.
		{"bf16 from float64 rounds once", BFloat16, one + math.Ldexp(1, -8) + math.Ldexp(1, -30), one + math.Ldexp(1, -7)},
		{"f16 tie goes to even", Float16, one + math.Ldexp(1, -11), 1},
		{"f16 from float64 rounds once", Float16, one + math.Ldexp(1, -11) + math.Ldexp(1, -40), one + math.Ldexp(1, -10)},
		{"f16 overflow", Float16, 70000, math.Inf(1)},
		{"f32", Float32, 0.1, float64(float32(0.1))},
		{"f64", Float64, 0.1, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.d.Round(tc.x))
			tt, err := FromFloat64s(tc.d, []float64{tc.x}, 1)
			require.NoError(t, err)
			assert.Equal(t, tc.want, tt.At(0))
		})
	}
	assert.True(t, math.IsNaN(BFloat16.Round(math.NaN())))
}

func TestConversionsAgreeWithFloat64Path(t *testing.T) {
	// Every dtype pair converts like "decode to float64, round to target".
	vals := []float64{0, -0.0, 1, -2.5, 3.14159265358979, 1e-3, 65504, 1e-8, -7.25e5, math.Ldexp(1, -130)}
	for _, from := range []DType{Float32, BFloat16, Float16, Float64} {
		src := Must(FromFloat64s(from, vals, 2, 5))
		for _, to := range []DType{Float32, BFloat16, Float16, Float64} {
			got, err := src.AsType(to)
			require.NoError(t, err)
			assert.Equal(t, []int{2, 5}, got.Shape())
			for i, x := range src.Float64s() {
				assert.Equal(t, to.Round(x), got.Float64s()[i], "%s -> %s element %d", from, to, i)
			}
		}
	}
}

func TestFromFloat32sMatchesFromFloat64s(t *testing.T) {
	f32 := []float32{1.00390625, -3.3, 1e-20, 123456.7}
	f64 := make([]float64, len(f32))
	for i, x := range f32 {
		f64[i] = float64(x)
	}
	for _, d := range []DType{Float32, BFloat16, Float16, Float64} {
		a := Must(FromFloat32s(d, f32, 4))
		b := Must(FromFloat64s(d, f64, 4))
		assert.True(t, a.Equal(b), d.String())
	}
	assert.Equal(t, f32, Must(FromFloat32s(Float32, f32, 2, 2)).Float32s())
}

func TestShapeErrors(t *testing.T) {
	_, err := FromFloat64s(Float32, []float64{1, 2, 3}, 2, 2)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "3 values for shape [2 2]")
	_, err = New(Float32, 2, -1)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "negative")
	_, err = NewChunked(Float32, 3, 2, 4)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "chunk length 3 does not divide 8")
	_, err = New(DType(7), 2)
	require.ErrorIs(t, err, ErrDType)
	_, err = FromBytes(BFloat16, make([]byte, 5), 3)
	require.ErrorIs(t, err, ErrShape)
	x := Must(New(Float32, 2, 3))
	_, err = x.Reshape(4, 2)
	require.ErrorIs(t, err, ErrShape)
	y, err := x.Reshape(3, 2)
	require.NoError(t, err)
	assert.Equal(t, []int{3, 2}, y.Shape())
	assert.Equal(t, []int{2, 3}, x.Shape(), "reshape must not change the original")
	require.ErrorIs(t, x.ReadFloat64s(make([]float64, 4), 3), ErrRange)
	assert.Panics(t, func() { x.At(2, 0) })
	assert.True(t, Tensor{}.IsZero())
	assert.Equal(t, "float32[2 3]", x.String())
}

func seq(n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(i + 1)
	}
	return out
}

func TestChunkedReadsCrossChunks(t *testing.T) {
	src := Must(FromFloat64s(Float32, seq(24), 24))
	ed := Must(NewChunked(Float32, 8, 3, 8)).Edit()
	require.NoError(t, ed.Write(0, src, 0, 24))
	x := ed.Tensor()
	assert.Equal(t, 3, x.NumChunks())
	assert.Equal(t, seq(24), x.Float64s())
	got := make([]float64, 10)
	require.NoError(t, x.ReadFloat64s(got, 5))
	assert.Equal(t, seq(15)[5:], got)
	assert.Equal(t, 16.0, x.At(1, 7))
	b := make([]byte, 10*2)
	require.NoError(t, x.ReadBytes(b, BFloat16, 5))
	assert.Equal(t, Must(FromFloat64s(BFloat16, seq(15)[5:], 10)).Bytes(), b)
}

func TestEditorAppendsInPlaceAndNeverChangesOlderVersions(t *testing.T) {
	src := Must(FromFloat64s(Float64, []float64{10, 20, 30, 40, 50, 60}, 6))
	v0 := Must(NewChunked(Float64, 4, 2, 4)) // two chunks of 4

	e := v0.Edit()
	require.NoError(t, e.Write(0, src, 0, 2)) // chunk 0 [0,2) = 10 20
	v1 := e.Tensor()

	e = v1.Edit()
	require.NoError(t, e.Write(2, src, 2, 1)) // append at the tip: in place
	v2 := e.Tensor()
	assert.True(t, v2.SharesChunk(0, v1, 0), "an append at the tip shares the chunk")
	assert.Equal(t, []float64{10, 20, 30, 0, 0, 0, 0, 0}, v2.Float64s())
	assert.Equal(t, []float64{10, 20}, v1.Float64s()[:2], "v1's written elements are unchanged")

	// A sibling of v2 written from v1 at the same position must copy: v2 owns that tip.
	e = v1.Edit()
	require.NoError(t, e.Write(2, src, 4, 1))
	v2b := e.Tensor()
	assert.False(t, v2b.SharesChunk(0, v1, 0), "writing behind another version's tip copies")
	assert.Equal(t, []float64{10, 20, 50}, v2b.Float64s()[:3])
	assert.Equal(t, []float64{10, 20, 30}, v2.Float64s()[:3], "the sibling is untouched")
	assert.Equal(t, 0.0, v2b.At(0, 3), "the copy holds nothing past the write")

	// Untouched chunks stay shared, and a never-written chunk reads as zeros.
	assert.Equal(t, []float64{0, 0, 0, 0}, v2b.Float64s()[4:])
}

func TestEditorSecondWriteToSameChunkInOneEdit(t *testing.T) {
	src := Must(FromFloat64s(Float64, seq(8), 8))
	base := Must(NewChunked(Float64, 8, 8))
	e := base.Edit()
	require.NoError(t, e.Write(0, src, 0, 4))
	v := e.Tensor()

	e = v.Edit()
	require.NoError(t, e.Write(6, src, 6, 2)) // claims [4, 8) in place
	require.NoError(t, e.Write(4, src, 4, 2)) // inside our own claim
	w := e.Tensor()
	assert.Equal(t, seq(8), w.Float64s())

	// Writing behind the base's data in the same edit copies and keeps both writes.
	e = w.Edit()
	require.NoError(t, e.Write(1, Must(FromFloat64s(Float64, []float64{-1}, 1)), 0, 1))
	require.NoError(t, e.Write(0, Must(FromFloat64s(Float64, []float64{-2}, 1)), 0, 1))
	x := e.Tensor()
	assert.Equal(t, []float64{-2, -1}, x.Float64s()[:2])
	assert.Equal(t, seq(8), w.Float64s(), "w is unchanged")
}

func TestEditorConcurrentSiblingsNeverShareData(t *testing.T) {
	base := Must(NewChunked(Float64, 16, 4, 16))
	const n = 8
	out := make([]Tensor, n)
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := base
			for pos := range 16 {
				e := v.Edit()
				val := Must(FromFloat64s(Float64, []float64{float64(g*100 + pos)}, 1))
				for row := range 4 {
					if err := e.Write(row*16+pos, val, 0, 1); err != nil {
						panic(err)
					}
				}
				v = e.Tensor()
			}
			out[g] = v
		}()
	}
	wg.Wait()
	for g, v := range out {
		for row := range 4 {
			for pos := range 16 {
				require.Equal(t, float64(g*100+pos), v.At(row, pos), "writer %d row %d pos %d", g, row, pos)
			}
		}
	}
}

func TestEditorShare(t *testing.T) {
	a := Must(NewChunked(Float32, 4, 3, 4))
	e := a.Edit()
	require.NoError(t, e.Write(4, Must(FromFloat64s(Float32, []float64{1, 2, 3, 4}, 4)), 0, 4))
	a = e.Tensor()
	b := Must(NewChunked(Float32, 4, 2, 4))
	e = b.Edit()
	require.NoError(t, e.Share(0, a, 1, 1))
	b = e.Tensor()
	assert.True(t, b.SharesChunk(0, a, 1))
	assert.Equal(t, []float64{1, 2, 3, 4, 0, 0, 0, 0}, b.Float64s())

	// A later write into b's shared chunk behind its tip copies; a is unchanged.
	e = b.Edit()
	require.NoError(t, e.Write(3, Must(FromFloat64s(Float32, []float64{9}, 1)), 0, 1))
	b2 := e.Tensor()
	assert.Equal(t, []float64{1, 2, 3, 9}, b2.Float64s()[:4])
	assert.Equal(t, []float64{1, 2, 3, 4}, a.Float64s()[4:8])

	require.ErrorIs(t, b.Edit().Share(1, a, 2, 2), ErrRange)
	require.ErrorIs(t, b.Edit().Share(0, Must(NewChunked(Float64, 4, 4)), 0, 1), ErrShape)
}

func TestEditorRangeErrors(t *testing.T) {
	x := Must(NewChunked(Float32, 2, 4))
	src := Must(New(Float32, 2))
	err := x.Edit().Write(3, src, 0, 2)
	require.ErrorIs(t, err, ErrRange)
	assert.Contains(t, err.Error(), "[3, 5)")
	require.ErrorIs(t, x.Edit().Write(0, src, 1, 2), ErrRange)
}

func TestLargeTableUsesPathCopying(t *testing.T) {
	// 64^2+1 chunks: a three-level table. Writes land where they should.
	n := fan*fan + 1
	x := Must(NewChunked(Float32, 1, n))
	one := Must(FromFloat64s(Float32, []float64{7}, 1))
	e := x.Edit()
	for _, i := range []int{0, fan - 1, fan, fan * fan, n - 1} {
		require.NoError(t, e.Write(i, one, 0, 1))
	}
	y := e.Tensor()
	got := y.Float64s()
	for i, v := range got {
		want := 0.0
		switch i {
		case 0, fan - 1, fan, fan * fan, n - 1:
			want = 7
		}
		require.Equal(t, want, v, "element %d", i)
	}
	assert.Equal(t, make([]float64, n), x.Float64s(), "the base is untouched")
}

func TestWriteRowsGathersStridedRows(t *testing.T) {
	// src is (tokens=3, heads=2, dim=2); gather head 1 of every token into one run.
	src := Must(FromFloat64s(Float32, []float64{1, 2, 10, 20, 3, 4, 30, 40, 5, 6, 50, 60}, 3, 2, 2))
	for _, chunk := range []int{12, 4, 3} { // one chunk, chunk = 2 rows, chunk splitting rows
		dst := Must(NewChunked(BFloat16, chunk, 12))
		e := dst.Edit()
		require.NoError(t, e.WriteRows(2, src, 2, 4, 2, 3))
		got := e.Tensor().Float64s()
		assert.Equal(t, []float64{0, 0, 10, 20, 30, 40, 50, 60, 0, 0, 0, 0}, got, "chunk length %d", chunk)
	}
	// A chunked (non-dense) source goes through the general path.
	chunkedSrc := Must(NewChunked(Float32, 4, 3, 2, 2)).Edit()
	require.NoError(t, chunkedSrc.Write(0, src, 0, 12))
	e := Must(New(Float64, 6)).Edit()
	require.NoError(t, e.WriteRows(0, chunkedSrc.Tensor(), 0, 4, 2, 3))
	assert.Equal(t, []float64{1, 2, 3, 4, 5, 6}, e.Tensor().Float64s())

	err := Must(New(Float32, 4)).Edit().WriteRows(0, src, 2, 4, 2, 4) // last row past the source
	require.ErrorIs(t, err, ErrRange)
	err = Must(New(Float32, 4)).Edit().WriteRows(0, src, 0, -1, 2, 2)
	require.ErrorIs(t, err, ErrRange)
}

func TestPreallocatedClaimsInPlace(t *testing.T) {
	x := Must(NewPreallocated(Float32, 4, 3, 4))
	assert.Equal(t, make([]float64, 12), x.Float64s())
	one := Must(FromFloat64s(Float32, []float64{1, 2, 3, 4}, 4))
	e := x.Edit()
	require.NoError(t, e.Write(4, one, 0, 4))
	y := e.Tensor()
	for c := range 3 {
		assert.True(t, y.SharesChunk(c, x, c), "chunk %d is written in place, never copied", c)
	}
	assert.Equal(t, []float64{0, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}, y.Float64s())
	// Rewriting the same chunk from x (a sibling of y) copies it.
	e = x.Edit()
	require.NoError(t, e.Write(4, one, 3, 1))
	z := e.Tensor()
	assert.False(t, z.SharesChunk(1, x, 1))
	assert.Equal(t, 4.0, z.At(1, 0))
	assert.Equal(t, 1.0, y.At(1, 0), "y keeps what it wrote")
}

func TestCodeDTypes(t *testing.T) {
	for _, tc := range []struct {
		d    DType
		name string
		in   []float64
		want []float64
	}{
		{I8, "int8", []float64{-200, -1.5, 0.5, 2.5, 127.4, 300, math.NaN()}, []float64{-128, -2, 0, 2, 127, 127, 0}},
		{U8, "uint8", []float64{-3, 0.5, 1.5, 254.6, 999}, []float64{0, 0, 2, 255, 255}},
	} {
		assert.Equal(t, 1, tc.d.Size())
		assert.False(t, tc.d.IsFloat())
		got, err := ParseDType(tc.name)
		require.NoError(t, err)
		assert.Equal(t, tc.d, got)
		x := Must(FromFloat64s(tc.d, tc.in, len(tc.in)))
		assert.Equal(t, tc.want, x.Float64s(), "%s saturates and rounds half to even", tc.name)
		f := Must(x.AsType(Float32))
		assert.Equal(t, tc.want, f.Float64s())
	}
	assert.True(t, BFloat16.IsFloat())
}

// The fast rounding path agrees with the exact conversion on random values
// of every magnitude, ties included.
func TestRoundFastPathAgreesWithConversion(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		x := math.Ldexp(r.Float64()+0.5, r.IntN(80)-40)
		if i%3 == 0 {
			x = float64(float32(x)) // exact float32 values, the source of ties
		}
		if i%2 == 0 {
			x = -x
		}
		require.Equal(t, float64(bf16ToF32(f64ToBF16(x))), BFloat16.Round(x), "bf16 %v", x)
		require.Equal(t, float64(float16.Frombits(f64ToF16(x)).Float32()), Float16.Round(x), "f16 %v", x)
	}
	for _, x := range []float64{0x1.fep127, 0x1.feffffp127, 0x1.ffcp15, 65519.99, 0x1p-126, 0x1p-14} {
		require.Equal(t, float64(bf16ToF32(f64ToBF16(x))), BFloat16.Round(x), "bf16 %v", x)
		require.Equal(t, float64(float16.Frombits(f64ToF16(x)).Float32()), Float16.Round(x), "f16 %v", x)
	}
}

func TestNF4CodeMatchesLinearSearch(t *testing.T) {
	linear := func(v float64) byte {
		c := 0
		for c < 16 && nf4Bounds[c] < v {
			c++
		}
		return byte(c - 1)
	}
	r := rand.New(rand.NewPCG(3, 4))
	vals := append([]float64{-1, 1, 0, -2, 2}, nf4Bounds[1:]...)
	for range 10000 {
		vals = append(vals, r.Float64()*2.2-1.1)
	}
	for _, v := range vals {
		require.Equal(t, linear(v), nf4Code(v), "v=%v", v)
	}
}

func TestWrapBytesTakesDataWithoutCopy(t *testing.T) {
	data := Must(FromFloat64s(BFloat16, []float64{1, 2, 3, 4, 5, 6}, 6)).Bytes()
	x, err := WrapBytes(BFloat16, data, 2, 3)
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2, 3, 4, 5, 6}, x.Float64s())
	// The tensor is data: the documented contract is that the caller no
	// longer writes it; this write shows no copy was made.
	data[0], data[1] = 0, 0
	assert.Equal(t, 0.0, x.At(0, 0))

	_, err = WrapBytes(Float32, make([]byte, 6), 2)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "6 bytes")
	_, err = WrapBytes(Float32, make([]byte, 8), 3)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "shape [3]")
	_, err = WrapBytes(DType(0), nil)
	require.ErrorIs(t, err, ErrDType)
}

func TestVisitBytesWalksChunksInOrder(t *testing.T) {
	// 12 float32 in chunks of 4, the middle chunk never written: pieces
	// come chunk by chunk and their concatenation is the tensor's bytes.
	x := Must(NewChunked(Float32, 4, 12))
	ed := x.Edit()
	require.NoError(t, ed.Write(0, Must(FromFloat64s(Float32, []float64{1, 2, 3, 4}, 4)), 0, 4))
	require.NoError(t, ed.Write(8, Must(FromFloat64s(Float32, []float64{9, 10}, 2)), 0, 2))
	x = ed.Tensor()
	for _, r := range [][2]int{{0, 12}, {1, 8}, {4, 4}, {9, 1}, {3, 0}} {
		got := []byte{}
		var sizes []int
		require.NoError(t, x.VisitBytes(r[0], r[1], func(p []byte) error {
			got = append(got, p...)
			sizes = append(sizes, len(p))
			return nil
		}))
		want := make([]byte, 4*r[1])
		require.NoError(t, x.ReadBytes(want, Float32, r[0]))
		assert.Equal(t, want, got, "range %v", r)
		for _, s := range sizes {
			assert.LessOrEqual(t, s, 16, "range %v: a piece spans chunks", r)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := x.VisitBytes(0, 12, func([]byte) error { calls++; return stop })
	require.ErrorIs(t, err, stop)
	assert.Equal(t, 1, calls)
	require.ErrorIs(t, x.VisitBytes(10, 3, func([]byte) error { return nil }), ErrRange)
}
