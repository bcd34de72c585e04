package paged

import (
	"math"
	mrand "math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestStorageValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   Storage
		err  error
		msg  string
	}{
		{"bf16", Storage{DType: tensor.BFloat16}, nil, ""},
		{"nf4", Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 32}, nil, ""},
		{"code dtype", Storage{DType: tensor.U8}, ErrDType, "uint8 is not a supported KV dtype"},
		{"unknown method", Storage{DType: tensor.Float32, Quantization: tensor.Quantization(3)}, ErrQuantization, "unknown quantization Quantization(3)"},
		{"negative block", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: -1}, ErrQuantization, "block size -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.st.Validate()
			if tc.err == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestNewViewStorage(t *testing.T) {
	meta := testMeta(2, 8, 4, 96)
	_, err := NewViewStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}, 0)
	require.ErrorIs(t, err, ErrQuantization)
	assert.Contains(t, err.Error(), "nf4 block size 64 does not divide the head dim 96")
	_, err = InitStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 40})
	require.ErrorIs(t, err, ErrQuantization)
	_, err = NewViewStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, 2)
	require.ErrorIs(t, err, ErrOutOfRange)
	_, err = NewViewStorage(testMeta(0, 8, 4, 96), Storage{DType: tensor.BFloat16}, 0)
	require.ErrorIs(t, err, ErrInvalidMetadata)

	for _, tc := range []struct {
		st                    Storage
		want                  Storage
		codes                 tensor.DType
		codeShape, scaleShape []int
	}{
		{Storage{DType: tensor.BFloat16, Quantization: tensor.Int8, BlockSize: 5}, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8},
			tensor.I8, []int{2, 8, 4, 96}, []int{2, 8, 4, 1}},
		{Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 32}, Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 32},
			tensor.U8, []int{2, 8, 4, 48}, []int{2, 8, 4, 3}},
	} {
		v, err := NewViewStorage(meta, tc.st, 1)
		require.NoError(t, err)
		assert.True(t, v.IsQuantized())
		assert.Equal(t, tc.want, v.Storage())
		assert.Equal(t, tc.st.DType, v.DType())
		assert.Equal(t, tc.codes, v.KeyCodes().DType())
		assert.Equal(t, tc.codeShape, v.ValueCodes().Shape())
		assert.Equal(t, tc.scaleShape, v.KeyScales().Shape())
		assert.Equal(t, tc.st.DType, v.ValueScales().DType())
		assert.Equal(t, tc.codeShape[3]*4, v.KeyCodes().ChunkLen(), "one chunk per page of one head")
		assert.Equal(t, []int{2, 8, 4, 96}, v.KeyPages().Shape())
		assert.Equal(t, tc.st.DType, v.ValuePages().DType())
	}
	plain := testView(t, meta, tensor.Float16)
	assert.False(t, plain.IsQuantized())
	assert.Equal(t, Storage{DType: tensor.Float16}, plain.Storage())
	assert.True(t, plain.KeyCodes().IsZero())
	assert.True(t, plain.ValueScales().IsZero())
	assert.Equal(t, Storage{}, View{}.Storage())
}

// pagedQuantRef returns the stored form of rows of d values of x, rounded
// to the cache dtype, by package tensor's whole-tensor quantizers: codes as
// bytes and scales as float64s, row after row.
func pagedQuantRef(t *testing.T, st Storage, x tensor.Tensor, d int) (codes []byte, scales []float64) {
	t.Helper()
	flat := tensor.Must(tensor.Must(x.AsType(st.DType)).Reshape(x.Len()/d, d))
	if st.Quantization == tensor.Int8 {
		q, err := tensor.QuantizeInt8(flat)
		require.NoError(t, err)
		for _, c := range q.Codes {
			codes = append(codes, byte(c))
		}
		return codes, q.Scales.Float64s()
	}
	q, err := tensor.QuantizeNF4(flat, min(st.BlockSize, d))
	require.NoError(t, err)
	return q.Packed, q.Absmax.Float64s()
}

// stored returns the codes and scales of row (h, page, offset) of a pool.
func stored(t *testing.T, v View, key bool, h, page, off int) ([]byte, []float64) {
	t.Helper()
	c, s := v.ValueCodes(), v.ValueScales()
	if key {
		c, s = v.KeyCodes(), v.KeyScales()
	}
	r := v.row(h, page, off)
	cpr, spr := c.Dim(3), s.Dim(3)
	codes := make([]byte, cpr)
	require.NoError(t, c.ReadBytes(codes, c.DType(), r*cpr))
	scales := make([]float64, spr)
	require.NoError(t, s.ReadFloat64s(scales, r*spr))
	return codes, scales
}

// TestQuantizedPagesStayQuantized writes a prefill in two chunks and many
// decode steps into quantized pools, with an inactive slot writing to the
// dummy page. After every write: the pools are still codes and scales;
// each row written holds exactly the whole-tensor quantizers' codes and
// scales of its input row; every other row keeps its codes and scales; a
// sequence read by Gather is the dequantized stored form, within the
// quantizer's error bound of the inputs, and equals the same rows of
// KeyPages (the dequantized pool); and the previous version still reads the
// same.
func TestQuantizedPagesStayQuantized(t *testing.T) {
	const H, N, ps, D = 2, 16, 4, 8
	r := mrand.New(mrand.NewPCG(3, 4))
	for _, st := range []Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4},
	} {
		t.Run(st.Quantization.String(), func(t *testing.T) {
			meta := testMeta(H, N, ps, D)
			meta.MaxSequences, meta.NumPagesPerSequence = 8*ps, 8
			v, err := NewViewStorage(meta, st, 1)
			require.NoError(t, err)
			tables := [][]int32{{9, 3, 12, 5, 7}, {2, 14, 6, 11, 4}, {0, 0, 0, 0, 0}}
			lengths := []int{0, 0}
			inputs := map[[2]int][2][]float32{} // (seq, position) -> key, value
			rnd := func(rows int) tensor.Tensor {
				x := make([]float32, rows*H*D)
				for i := range x {
					x[i] = float32(r.NormFloat64() * math.Ldexp(1, r.IntN(4)-2))
				}
				return tensor.Must(tensor.FromFloat32s(tensor.Float32, x, rows, H, D))
			}
			type write struct {
				seq, pos int // row written: sequence (2: the inactive slot), position
				k, v     tensor.Tensor
				row      int // row of k and v
			}
			step := func(name string, next View, err error, writes []write) {
				t.Helper()
				require.NoError(t, err, name)
				require.True(t, next.IsQuantized())
				require.Equal(t, map[tensor.Quantization]tensor.DType{tensor.Int8: tensor.I8, tensor.NF4: tensor.U8}[st.Quantization], next.KeyCodes().DType())
				written := map[[3]int]bool{}
				for _, w := range writes {
					lp := floorDiv(w.pos, ps)
					if lp < 0 { // position -1: the row's last entry, the dummy page 0
						lp += len(tables[w.seq])
					}
					page := int(tables[w.seq][lp])
					off := floorMod(w.pos, ps)
					kc, ks := pagedQuantRef(t, next.Storage(), sliceRows(t, w.k, w.row, 1), D)
					vc, vs := pagedQuantRef(t, next.Storage(), sliceRows(t, w.v, w.row, 1), D)
					for h := range H {
						n, m := len(kc)/H, len(ks)/H
						gc, gs := stored(t, next, true, h, page, off)
						assert.Equal(t, kc[h*n:(h+1)*n], gc, "%s: key codes seq %d pos %d head %d", name, w.seq, w.pos, h)
						assert.Equal(t, ks[h*m:(h+1)*m], gs, "%s: key scales", name)
						gc, gs = stored(t, next, false, h, page, off)
						assert.Equal(t, vc[h*n:(h+1)*n], gc, "%s: value codes", name)
						assert.Equal(t, vs[h*m:(h+1)*m], gs, "%s: value scales", name)
						written[[3]int{h, page, off}] = true
					}
					if w.seq < 2 {
						inputs[[2]int{w.seq, w.pos}] = [2][]float32{row(t, w.k, w.row), row(t, w.v, w.row)}
					}
				}
				// Every other row keeps its stored form.
				for h := range H {
					for p := range N {
						for o := range ps {
							if written[[3]int{h, p, o}] {
								continue
							}
							ac, as := stored(t, v, true, h, p, o)
							bc, bs := stored(t, next, true, h, p, o)
							require.Equal(t, ac, bc, "%s: row (%d, %d, %d) changed", name, h, p, o)
							require.Equal(t, as, bs)
						}
					}
				}
				// Reads.
				pool := next.KeyPages()
				for s := range 2 {
					old, _, err := v.Gather(tables[s], lengths[s])
					require.NoError(t, err)
					for _, w := range writes {
						if w.seq == s {
							lengths[s] = max(lengths[s], w.pos+1)
						}
					}
					k, val, err := next.Gather(tables[s], lengths[s])
					require.NoError(t, err)
					require.Equal(t, st.DType, k.DType())
					for p := range lengths[s] {
						in := inputs[[2]int{s, p}]
						for h := range H {
							got := headRow(t, k, p, h)
							pagedBound(t, st, in[0][h*D:(h+1)*D], got)
							pagedBound(t, st, in[1][h*D:(h+1)*D], headRow(t, val, p, h))
							assert.Equal(t, slot(t, pool, h, int(tables[s][p/ps]), p%ps), got, "KeyPages and Gather agree")
						}
					}
					again, _, err := v.Gather(tables[s], old.Dim(0))
					require.NoError(t, err)
					require.Equal(t, old.Float64s(), again.Float64s(), "%s: the previous version changed", name)
				}
				v = next
			}

			// Prefill of sequence 0 in two chunks: 6 tokens then 3 (chunked
			// prefill, starting inside a page).
			k0, v0 := rnd(6), rnd(6)
			next, err := v.WritePrefill(k0, v0, StepMetadata{PrefillLength: 6, PrefillPageTable: tables[0]})
			var ws []write
			for p := range 6 {
				ws = append(ws, write{0, p, k0, v0, p})
			}
			step("prefill", next, err, ws)
			k1, v1 := rnd(4), rnd(4) // 3 real tokens and one padding token
			next, err = v.WritePrefill(k1, v1, StepMetadata{PrefillLength: 9, PrefillPosition: []int32{6, 7, 8, 9}, PrefillPageTable: tables[0]})
			ws = nil
			for p := range 3 {
				ws = append(ws, write{0, 6 + p, k1, v1, p})
			}
			step("chunk", next, err, ws)
			// Decodes: sequence 1 starts from nothing; slot 2 is inactive.
			for i := range 10 {
				k, val := rnd(3), rnd(3)
				pos := []int32{int32(9 + i), int32(i), -1}
				next, err := v.WriteDecodes(k, val, StepMetadata{DecodesPosition: pos, DecodesPageTable: tables})
				step("decode", next, err, []write{{0, int(pos[0]), k, val, 0}, {1, i, k, val, 1}, {2, -1, k, val, 2}})
			}
			assert.Equal(t, []int{19, 10}, lengths)
		})
	}
}

// sliceRows returns rows [r, r+n) of a (rows, H, D) tensor.
func sliceRows(t *testing.T, x tensor.Tensor, r, n int) tensor.Tensor {
	t.Helper()
	per := x.Dim(1) * x.Dim(2)
	out := make([]float64, n*per)
	require.NoError(t, x.ReadFloat64s(out, r*per))
	return tensor.Must(tensor.FromFloat64s(x.DType(), out, n, x.Dim(1), x.Dim(2)))
}

// pagedBound checks a row read back against its input: int8 within
// scale/2 plus dtype rounding, NF4 within half the largest NF4 table gap
// times the block's absmax plus rounding.
func pagedBound(t *testing.T, st Storage, in, got []float32) {
	t.Helper()
	u := map[tensor.DType]float64{tensor.BFloat16: 0x1p-8, tensor.Float32: 0x1p-24}[st.DType]
	x := make([]float64, len(in))
	amax := 0.0
	for i, f := range in {
		x[i] = st.DType.Round(float64(f))
		amax = max(amax, math.Abs(x[i]))
	}
	for i := range x {
		bound := amax/254*(1+u) + 3*amax*u
		if st.Quantization == tensor.NF4 {
			b := min(st.BlockSize, len(x))
			absmax := 0.0
			for _, y := range x[i/b*b : (i/b+1)*b] {
				absmax = max(absmax, math.Abs(y))
			}
			bound = (0.3038/2 + 2*u) * absmax
		}
		require.LessOrEqual(t, math.Abs(x[i]-float64(got[i])), bound, "element %d: %g read as %g", i, x[i], got[i])
	}
}

// TestQuantizedPagedNumBytes checks the pools' stored size against numbers
// worked out by hand: 2 heads x 8 pages x 4 offsets = 64 rows of 64
// values per pool, two pools per view, two views.
func TestQuantizedPagedNumBytes(t *testing.T) {
	meta := testMeta(2, 8, 4, 64)
	for _, tc := range []struct {
		name string
		st   Storage
		want int
	}{
		{"bf16", Storage{DType: tensor.BFloat16}, 2 * 2 * 64 * 64 * 2},                                                        // 32768
		{"int8", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, 2 * 2 * 64 * (64 + 2)},                           // 16896
		{"nf4/64", Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}, 2 * 2 * 64 * (32 + 2)},                          // 8704
		{"nf4/32 f32 absmax", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 32}, 2 * 2 * 64 * (32 + 8)}, // 10240
	} {
		c, err := InitStorage(meta, tc.st)
		require.NoError(t, err)
		assert.Equal(t, tc.want, c.NumBytes(), tc.name)
		v, err := c.View(0)
		require.NoError(t, err)
		assert.Equal(t, tc.want/2, v.NumBytes(), tc.name)
	}
	assert.Equal(t, []int{32768, 16896, 8704, 10240}, []int{2 * 2 * 64 * 64 * 2, 2 * 2 * 64 * 66, 2 * 2 * 64 * 34, 2 * 2 * 64 * 40})
	empty, err := InitEmpty(2)
	require.NoError(t, err)
	assert.Equal(t, 0, empty.NumBytes())
}
