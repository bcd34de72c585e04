package kvquant

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestNewFormat(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		dtype                  tensor.DType
		q                      tensor.Quantization
		block, width           int
		wantBlock, data, scale int
		err                    string
	}{
		{"none", tensor.BFloat16, tensor.None, 0, 128, 0, 128, 0, ""},
		{"int8", tensor.BFloat16, tensor.Int8, 64, 128, 0, 128, 1, ""},
		{"nf4 block 64", tensor.Float32, tensor.NF4, 64, 128, 64, 64, 2, ""},
		{"nf4 block above width", tensor.Float32, tensor.NF4, 64, 8, 8, 4, 1, ""},
		{"nf4 odd width", tensor.Float32, tensor.NF4, 64, 7, 7, 4, 1, ""},
		{"nf4 block 32 of 96", tensor.Float16, tensor.NF4, 32, 96, 32, 48, 3, ""},
		{"nf4 block does not divide", tensor.Float32, tensor.NF4, 64, 96, 0, 0, 0, "nf4 block size 64 does not divide the head dim 96"},
		{"nf4 zero block", tensor.Float32, tensor.NF4, 0, 96, 0, 0, 0, "nf4 block size 0"},
		{"code dtype", tensor.I8, tensor.Int8, 0, 8, 0, 0, 0, "cache dtype int8"},
		{"zero width", tensor.Float32, tensor.Int8, 0, 0, 0, 0, 0, "row width 0"},
		{"unknown", tensor.Float32, tensor.Quantization(7), 0, 8, 0, 0, 0, "unknown quantization"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFormat(tc.dtype, tc.q, tc.block, tc.width)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantBlock, f.Block)
			assert.Equal(t, tc.data, f.DataPerRow())
			assert.Equal(t, tc.scale, f.ScalesPerRow())
		})
	}
}

// randomRows returns n rows of w values, of mixed magnitudes (row r is
// scaled by 2^(r%7-3)), including an all-zero row and a row with one
// non-zero value.
func randomRows(seed uint64, n, w int) []float64 {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float64, n*w)
	for i := range x {
		x[i] = r.NormFloat64() * math.Ldexp(1, i/w%7-3)
	}
	if n > 2 {
		clear(x[w : 2*w])
		clear(x[2*w : 3*w])
		x[2*w+1] = -3.5
	}
	return x
}

// unitRoundoff returns 2^-p for a dtype of p significant bits.
func unitRoundoff(d tensor.DType) float64 {
	switch d {
	case tensor.BFloat16:
		return math.Ldexp(1, -8)
	case tensor.Float16:
		return math.Ldexp(1, -11)
	case tensor.Float32:
		return math.Ldexp(1, -24)
	}
	return math.Ldexp(1, -53)
}

// nf4HalfGap is half the largest gap between consecutive NF4 levels.
func nf4HalfGap() float64 {
	g := 0.0
	for i := 1; i < 16; i++ {
		g = max(g, tensor.NF4Levels[i]-tensor.NF4Levels[i-1])
	}
	return g / 2
}

// TestErrorBounds writes rows through an Editor and reads them back, and
// checks every element against the quantizer's error bound:
//
//	int8: |x - dq| <= scale/2 + 3·amax·u
//	nf4:  |x - dq| <= (halfgap + 2u)·absmax
//
// where x is the value rounded to the cache dtype, amax the row's max |x|,
// absmax the block's and u the dtype's unit roundoff: scale/2 (half a
// quantization step) and half the largest table gap are the quantizers'
// own bounds; the u terms cover rounding x/scale (or x/absmax), the scale
// and the dequantized value to the dtype, as EasyDeL's computation in the
// dtype does. For float32 and float64 the u terms are below 1e-6 of the
// bound.
func TestErrorBounds(t *testing.T) {
	const rows, w = 40, 64
	for _, d := range []tensor.DType{tensor.Float64, tensor.Float32, tensor.BFloat16, tensor.Float16} {
		for _, q := range []tensor.Quantization{tensor.Int8, tensor.NF4} {
			t.Run(d.String()+"/"+q.String(), func(t *testing.T) {
				f, err := NewFormat(d, q, 16, w)
				require.NoError(t, err)
				src := tensor.Must(tensor.FromFloat64s(tensor.Float64, randomRows(uint64(d)*3+uint64(q), rows, w), rows, w))
				s, err := New(f, Layout{RowsPerChunk: 4}, rows, w)
				require.NoError(t, err)
				enc, err := f.Encode(src)
				require.NoError(t, err)
				e := s.Edit()
				require.NoError(t, e.WriteRows(0, &enc, 0, 1, rows))
				s = e.Store()
				got := make([]float64, rows*w)
				require.NoError(t, s.ReadRows(got, 0))
				u := unitRoundoff(d)
				x := src.Float64s()
				worst := 0.0
				for r := range rows {
					row := x[r*w : (r+1)*w]
					amax := 0.0
					for _, v := range row {
						amax = max(amax, math.Abs(d.Round(v)))
					}
					for i, v := range row {
						xv := d.Round(v)
						var bound float64
						if q == tensor.Int8 {
							bound = s.Scales.At(r, 0)/2 + 3*amax*u
						} else {
							bound = (nf4HalfGap() + 2*u) * s.Scales.At(r, i/f.Block)
						}
						diff := math.Abs(xv - got[r*w+i])
						require.LessOrEqual(t, diff, bound, "row %d element %d: x=%g dq=%g", r, i, xv, got[r*w+i])
						if bound > 0 {
							worst = max(worst, diff/bound)
						}
					}
				}
				// The bound is not vacuous: some element uses a good part of it.
				assert.Greater(t, worst, 0.3)
				// The all-zero row reads back as zeros.
				assert.Equal(t, make([]float64, w), got[w:2*w])
			})
		}
	}
}

// TestEncodeMatchesWholeTensorQuantizers checks that row-by-row encoding
// gives the codes and scales of tensor.QuantizeInt8 and tensor.QuantizeNF4
// on the whole tensor (rounded to the cache dtype first, as EasyDeL's
// astype does), byte for byte.
func TestEncodeMatchesWholeTensorQuantizers(t *testing.T) {
	const rows, w = 12, 32
	x := randomRows(5, rows, w)
	for _, d := range []tensor.DType{tensor.BFloat16, tensor.Float32} {
		src := tensor.Must(tensor.FromFloat64s(tensor.Float64, x, rows, w))
		rounded := tensor.Must(src.AsType(d))

		f8, err := NewFormat(d, tensor.Int8, 0, w)
		require.NoError(t, err)
		enc, err := f8.Encode(src)
		require.NoError(t, err)
		want8, err := tensor.QuantizeInt8(rounded)
		require.NoError(t, err)
		codes := make([]byte, len(want8.Codes))
		for i, c := range want8.Codes {
			codes[i] = byte(c)
		}
		assert.Equal(t, codes, enc.data.Bytes(), "%s int8 codes", d)
		assert.Equal(t, want8.Scales.Bytes(), enc.scales.Bytes(), "%s int8 scales", d)

		f4, err := NewFormat(d, tensor.NF4, 16, w)
		require.NoError(t, err)
		enc, err = f4.Encode(src)
		require.NoError(t, err)
		want4, err := tensor.QuantizeNF4(rounded, 16)
		require.NoError(t, err)
		assert.Equal(t, want4.Packed, enc.data.Bytes(), "%s nf4 codes", d)
		assert.Equal(t, want4.Absmax.Bytes(), enc.scales.Bytes(), "%s nf4 absmax", d)
	}
}

// TestWritesTouchOnlyTheirRows writes rows in several steps, as decode
// steps do, and checks after each step that the rows written before keep
// their bytes, the new rows hold their encoding, the rows never written
// read as zeros, every older version still reads the rows it wrote, and the
// store is still quantized.
func TestWritesTouchOnlyTheirRows(t *testing.T) {
	const rows, w = 24, 16
	for _, q := range []tensor.Quantization{tensor.None, tensor.Int8, tensor.NF4} {
		t.Run(q.String(), func(t *testing.T) {
			f, err := NewFormat(tensor.BFloat16, q, 8, w)
			require.NoError(t, err)
			s, err := New(f, Layout{RowsPerChunk: 4}, rows, w)
			require.NoError(t, err)
			x := randomRows(9, rows, w)
			want := make([]float64, rows*w) // what each row must read as
			type version struct {
				s    Store
				rows int
				read []float64
			}
			var versions []version
			for step, r := 0, 0; r < rows; step++ {
				n := 1 + step%3 // 1, 2 or 3 rows per step
				n = min(n, rows-r)
				src := tensor.Must(tensor.FromFloat64s(tensor.Float32, x[r*w:(r+n)*w], n, w))
				enc, err := f.Encode(src)
				require.NoError(t, err)
				e := s.Edit()
				require.NoError(t, e.WriteRows(r, &enc, 0, 1, n))
				next := e.Store()
				// The new rows read as the dequantized encoding of the input.
				one := Store{Format: f, Data: enc.data, Scales: enc.scales}
				if !f.Quantized() {
					one.Data = tensor.Must(enc.data.AsType(f.DType))
				}
				fresh := make([]float64, n*w)
				require.NoError(t, one.ReadRows(fresh, 0))
				copy(want[r*w:], fresh)
				got := make([]float64, rows*w)
				require.NoError(t, next.ReadRows(got, 0))
				require.Equal(t, want, got, "after writing rows [%d, %d)", r, r+n)
				assert.Equal(t, f.DataDType(), next.Data.DType())
				assert.Equal(t, f.Quantized(), !next.Scales.IsZero())
				versions = append(versions, version{next, r + n, got[:(r+n)*w]})
				s = next
				r += n
			}
			for i, v := range versions {
				got := make([]float64, v.rows*w)
				require.NoError(t, v.s.ReadRows(got, 0))
				assert.Equal(t, v.read, got, "version %d changed", i)
			}
		})
	}
}

// TestStridedRows writes rows gathered with a stride (the paged prefill's
// one-head-of-many-tokens pattern) and reads them back in order.
func TestStridedRows(t *testing.T) {
	const tokens, heads, w = 6, 3, 8
	x := randomRows(3, tokens*heads, w)
	src := tensor.Must(tensor.FromFloat64s(tensor.Float32, x, tokens, heads, w))
	for _, q := range []tensor.Quantization{tensor.None, tensor.Int8, tensor.NF4} {
		f, err := NewFormat(tensor.Float32, q, 8, w)
		require.NoError(t, err)
		s, err := New(f, Layout{RowsPerChunk: tokens, Preallocated: true}, heads, tokens, w)
		require.NoError(t, err)
		enc, err := f.Encode(src)
		require.NoError(t, err)
		e := s.Edit()
		for h := range heads {
			require.NoError(t, e.WriteRows(h*tokens, &enc, h, heads, tokens))
		}
		s = e.Store()
		all := make([]float64, tokens*heads*w)
		require.NoError(t, Store{Format: f, Data: enc.data, Scales: enc.scales}.ReadRows(all, 0))
		for h := range heads {
			for tok := range tokens {
				got := make([]float64, w)
				require.NoError(t, s.ReadRows(got, h*tokens+tok))
				assert.Equal(t, all[(tok*heads+h)*w:(tok*heads+h+1)*w], got, "%s head %d token %d", q, h, tok)
			}
		}
	}
}

func TestDequantizeSpans(t *testing.T) {
	const rows, w = 8, 4
	f, err := NewFormat(tensor.Float32, tensor.Int8, 0, w)
	require.NoError(t, err)
	s, err := New(f, Layout{RowsPerChunk: 2}, 2, rows/2, w)
	require.NoError(t, err)
	x := randomRows(4, rows, w)
	enc, err := f.Encode(tensor.Must(tensor.FromFloat64s(tensor.Float32, x, rows, w)))
	require.NoError(t, err)
	e := s.Edit()
	require.NoError(t, e.WriteRows(0, &enc, 0, 1, rows))
	s = e.Store()
	all := make([]float64, rows*w)
	require.NoError(t, s.ReadRows(all, 0))
	d, err := s.Dequantize(Span{0, 1}, Span{4, 7})
	require.NoError(t, err)
	assert.Equal(t, []int{2, rows / 2, w}, d.Shape())
	assert.Equal(t, tensor.Float32, d.DType())
	assert.False(t, d.SharesChunk(1, d, 1), "rows 2, 3 are outside the spans: their chunk stays unallocated")
	assert.True(t, d.SharesChunk(2, d, 2))
	got := d.Float64s()
	for r := range rows {
		want := make([]float64, w)
		if r < 1 || (r >= 4 && r < 7) {
			want = all[r*w : (r+1)*w]
		}
		assert.Equal(t, want, got[r*w:(r+1)*w], "row %d", r)
	}

	// Unquantized: Data itself, shared.
	pf := Format{DType: tensor.Float32, Width: w}
	p, err := New(pf, Layout{RowsPerChunk: 2}, rows, w)
	require.NoError(t, err)
	penc, err := pf.Encode(tensor.Must(tensor.FromFloat64s(tensor.Float32, x[:w], 1, w)))
	require.NoError(t, err)
	pe := p.Edit()
	require.NoError(t, pe.WriteRows(0, &penc, 0, 1, 1))
	p = pe.Store()
	pd, err := p.Dequantize()
	require.NoError(t, err)
	assert.True(t, pd.SharesChunk(0, p.Data, 0))
}

func TestFreezeAndShare(t *testing.T) {
	const rows, w = 8, 4
	f, err := NewFormat(tensor.Float32, tensor.NF4, 4, w)
	require.NoError(t, err)
	s, err := New(f, Layout{RowsPerChunk: 4}, rows, w)
	require.NoError(t, err)
	enc, err := f.Encode(tensor.Must(tensor.FromFloat64s(tensor.Float32, randomRows(6, rows, w), rows, w)))
	require.NoError(t, err)
	e := s.Edit()
	require.NoError(t, e.WriteRows(0, &enc, 0, 1, 2)) // rows 0, 1 of chunk 0
	base := e.Store()

	// A sibling appends rows 2, 3 in place; freezing rows 2, 3 of base first
	// makes base's own later view of them immune to the sibling.
	fe := base.Edit()
	require.NoError(t, fe.Freeze(base, 2, 4))
	frozen := fe.Store()
	se := base.Edit()
	require.NoError(t, se.WriteRows(2, &enc, 2, 1, 2))
	sibling := se.Store()
	got := make([]float64, 2*w)
	require.NoError(t, frozen.ReadRows(got, 2))
	assert.Equal(t, make([]float64, 2*w), got, "frozen rows keep the zeros they had")
	require.NoError(t, sibling.ReadRows(got, 2))
	assert.NotEqual(t, make([]float64, 2*w), got)

	// Share: chunk 0 of sibling becomes chunk 1 of a fresh store, codes and
	// scales alike, without copying.
	other, err := New(f, Layout{RowsPerChunk: 4}, rows, w)
	require.NoError(t, err)
	oe := other.Edit()
	require.NoError(t, oe.Share(1, sibling, 0, 1))
	shared := oe.Store()
	assert.True(t, shared.Data.SharesChunk(1, sibling.Data, 0))
	assert.True(t, shared.Scales.SharesChunk(1, sibling.Scales, 0))
	a, b := make([]float64, 4*w), make([]float64, 4*w)
	require.NoError(t, shared.ReadRows(a, 4))
	require.NoError(t, sibling.ReadRows(b, 0))
	assert.Equal(t, b, a)

	// Mismatched formats are refused.
	g, err := NewFormat(tensor.Float32, tensor.Int8, 0, w)
	require.NoError(t, err)
	bad, err := New(g, Layout{RowsPerChunk: 4}, rows, w)
	require.NoError(t, err)
	assert.Error(t, bad.Edit().Share(0, sibling, 0, 1))
}

func TestAssemble(t *testing.T) {
	const rows, w = 8, 4
	f, err := NewFormat(tensor.BFloat16, tensor.Int8, 0, w)
	require.NoError(t, err)
	l := Layout{RowsPerChunk: 2}
	s, err := New(f, l, rows, w)
	require.NoError(t, err)
	enc, err := f.Encode(tensor.Must(tensor.FromFloat64s(tensor.Float32, randomRows(8, 3, w), 3, w)))
	require.NoError(t, err)
	e := s.Edit()
	require.NoError(t, e.WriteRows(4, &enc, 0, 1, 3))
	s = e.Store()

	// Shared as is.
	same, err := Assemble(f, l, []int{rows, w}, s.Data, s.Scales, true)
	require.NoError(t, err)
	assert.True(t, same.Data.SharesChunk(2, s.Data, 2))
	// Copied from dense tensors, all-zero chunks left unwritten.
	dense, err := Assemble(f, l, []int{rows, w}, tensor.Must(tensor.FromBytes(tensor.I8, s.Data.Bytes(), rows, w)),
		tensor.Must(tensor.FromBytes(tensor.BFloat16, s.Scales.Bytes(), rows, 1)), true)
	require.NoError(t, err)
	assert.Equal(t, s.Data.Bytes(), dense.Data.Bytes())
	assert.Equal(t, s.Scales.Bytes(), dense.Scales.Bytes())
	assert.Equal(t, 2, dense.Data.ChunkLen()/w)
	assert.False(t, dense.Data.SharesChunk(0, dense.Data, 0), "the all-zero chunk 0 stays unallocated")
	assert.True(t, dense.Data.SharesChunk(2, dense.Data, 2))

	for name, tc := range map[string]struct {
		data, scales tensor.Tensor
		want         string
	}{
		"data dtype":    {tensor.Must(tensor.New(tensor.U8, rows, w)), s.Scales, "data is uint8[8 4], want int8[8 4]"},
		"scales shape":  {s.Data, tensor.Must(tensor.New(tensor.BFloat16, rows, 2)), "scales is bfloat16[8 2], want bfloat16[8 1]"},
		"scales absent": {s.Data, tensor.Tensor{}, "scales is <absent>"},
	} {
		_, err := Assemble(f, l, []int{rows, w}, tc.data, tc.scales, true)
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), tc.want, name)
	}
	_, err = Assemble(Format{DType: tensor.Float32, Width: w}, l, []int{rows, w}, tensor.Must(tensor.New(tensor.Float32, rows, w)), s.Scales, true)
	assert.ErrorContains(t, err, "scales bfloat16[8 1] given for unquantized float32 values")
}

// TestNumBytes checks the stored size by hand: 2 x 16 x 2 rows of 64
// values.
func TestNumBytes(t *testing.T) {
	const rows = 2 * 16 * 2
	for _, tc := range []struct {
		name  string
		q     tensor.Quantization
		block int
		want  int
	}{
		{"bf16", tensor.None, 0, rows * 64 * 2},                    // 8192
		{"int8", tensor.Int8, 0, rows*64 + rows*2},                 // 4096 codes + 128 scale bytes
		{"nf4/64", tensor.NF4, 64, rows*32 + rows*1*2},             // 2048 packed + 128 absmax bytes
		{"nf4/32", tensor.NF4, 32, rows*32 + rows*2*2},             // 2048 + 256
		{"nf4/16", tensor.NF4, 16, rows*32 + rows*4*2},             // 2048 + 512
		{"nf4/128 is block 64", tensor.NF4, 128, rows*32 + rows*2}, // min(128, 64)
	} {
		f, err := NewFormat(tensor.BFloat16, tc.q, tc.block, 64)
		require.NoError(t, err)
		s, err := New(f, Layout{RowsPerChunk: 4}, 2, 16, 2, 64)
		require.NoError(t, err)
		assert.Equal(t, tc.want, s.NumBytes(), tc.name)
		assert.Equal(t, tc.want, rows*f.RowBytes(), tc.name)
	}
	assert.Equal(t, 0, Store{}.NumBytes())
}
