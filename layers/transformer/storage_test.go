package transformer

import (
	"math"
	"math/rand/v2"
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
		{"int8", Storage{DType: tensor.Float32, Quantization: tensor.Int8}, nil, ""},
		{"nf4 default block", Storage{DType: tensor.Float16, Quantization: tensor.NF4}, nil, ""},
		{"no dtype", Storage{}, ErrDType, "cache dtype DType(0)"},
		{"code dtype", Storage{DType: tensor.I8, Quantization: tensor.Int8}, ErrDType, "cache dtype int8 (want float32, bfloat16, float16 or float64)"},
		{"unknown method", Storage{DType: tensor.Float32, Quantization: tensor.Quantization(9)}, ErrQuantization, "unknown quantization Quantization(9)"},
		{"negative block", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: -8}, ErrQuantization, "block size -8 must not be negative"},
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
	meta := testMeta(t, 2, 8, 2, 96, 1)
	// NF4 with a block that does not divide the head dim: an error naming
	// both (EasyDeL would silently store the cache unquantized).
	_, err := NewViewStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 64}, nil, nil)
	require.ErrorIs(t, err, ErrQuantization)
	assert.Contains(t, err.Error(), "nf4 block size 64 does not divide the head dim 96")
	_, err = InitStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}, nil) // default 64
	require.ErrorIs(t, err, ErrQuantization)
	// Different key and value dims: the value's dim is checked too.
	kv := testMeta(t, 1, 8, 1, 64, 1)
	kv.ValueDim = 48
	_, err = NewViewStorage(kv, Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 32}, nil, nil)
	require.ErrorIs(t, err, ErrQuantization)
	assert.Contains(t, err.Error(), "value cache: nf4 block size 32 does not divide the head dim 48")

	for _, tc := range []struct {
		name       string
		st         Storage
		want       Storage
		codes      tensor.DType
		codeShape  []int
		scaleShape []int
	}{
		{"int8", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8, BlockSize: 7},
			Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, tensor.I8, []int{2, 8, 2, 96}, []int{2, 8, 2, 1}},
		{"nf4/32", Storage{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32},
			Storage{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32}, tensor.U8, []int{2, 8, 2, 48}, []int{2, 8, 2, 3}},
		{"nf4/128 uses the whole row", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 128},
			Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 128}, tensor.U8, []int{2, 8, 2, 48}, []int{2, 8, 2, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewViewStorage(meta, tc.st, []int32{1, 0}, Ptr(3))
			require.NoError(t, err)
			assert.True(t, v.IsQuantized())
			assert.Equal(t, tc.want, v.Storage())
			assert.Equal(t, tc.st.DType, v.DType())
			for _, c := range []tensor.Tensor{v.KeyCodes(), v.ValueCodes()} {
				assert.Equal(t, tc.codes, c.DType())
				assert.Equal(t, tc.codeShape, c.Shape())
			}
			for _, s := range []tensor.Tensor{v.KeyScales(), v.ValueScales()} {
				assert.Equal(t, tc.st.DType, s.DType())
				assert.Equal(t, tc.scaleShape, s.Shape())
			}
			assert.Equal(t, []int{2, 8, 2, 96}, v.Key().Shape())
			assert.Equal(t, tc.st.DType, v.Value().DType())
			assert.Equal(t, []int32{1, 0}, v.Starts())
		})
	}

	plain, err := NewView(meta, tensor.BFloat16, nil, nil)
	require.NoError(t, err)
	assert.False(t, plain.IsQuantized())
	assert.Equal(t, Storage{DType: tensor.BFloat16}, plain.Storage())
	assert.True(t, plain.KeyCodes().IsZero())
	assert.True(t, plain.KeyScales().IsZero())
	assert.Equal(t, Storage{}, View{}.Storage())
}

// quantRef returns the stored form of one (q, H, D) write's row b as the
// whole-tensor quantizers of package tensor compute it, from the input
// rounded to the cache dtype: codes as bytes and scales as float64s.
func quantRef(t *testing.T, st Storage, x tensor.Tensor, d int) (codes []byte, scales []float64) {
	t.Helper()
	rounded := tensor.Must(x.AsType(st.DType))
	flat := tensor.Must(rounded.Reshape(rounded.Len()/d, d))
	switch st.Quantization {
	case tensor.Int8:
		q, err := tensor.QuantizeInt8(flat)
		require.NoError(t, err)
		for _, c := range q.Codes {
			codes = append(codes, byte(c))
		}
		return codes, q.Scales.Float64s()
	case tensor.NF4:
		q, err := tensor.QuantizeNF4(flat, min(st.BlockSize, d))
		require.NoError(t, err)
		return q.Packed, q.Absmax.Float64s()
	}
	t.Fatalf("not quantized: %v", st)
	return nil, nil
}

// readCodes returns n elements of a codes tensor from flat offset off.
func readCodes(t *testing.T, c tensor.Tensor, off, n int) []byte {
	t.Helper()
	out := make([]byte, n)
	require.NoError(t, c.ReadBytes(out, c.DType(), off))
	return out
}

func readScales(t *testing.T, s tensor.Tensor, off, n int) []float64 {
	t.Helper()
	out := make([]float64, n)
	require.NoError(t, s.ReadFloat64s(out, off))
	return out
}

// TestQuantizedWritesStayQuantized drives a quantized view through a
// prefill and many decode writes, crossing chunk boundaries, rows at
// different positions, through Append and ConcatenateToCache alternately.
// After every write: the stored form is still codes and scales of the
// storage's dtypes; the rows just written hold exactly the whole-tensor
// quantizers' codes and scales of the input; every row written before
// keeps its codes and scales; the read (ConcatenateToCache's key and
// value, and Key/Value) is the dequantized stored form, within the error
// bound of the input, with zeros past the index; and the previous version
// still reads what it read.
func TestQuantizedWritesStayQuantized(t *testing.T) {
	const B, S, H, D = 2, 48, 2, 16 // chunks of 16 positions
	r := rand.New(rand.NewPCG(1, 2))
	for _, st := range []Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float32, Quantization: tensor.Int8},
		{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 8},
		{DType: tensor.Float16, Quantization: tensor.NF4},
	} {
		t.Run(st.DType.String()+"/"+st.Quantization.String(), func(t *testing.T) {
			meta := testMeta(t, B, S, H, D, 1)
			v, err := NewViewStorage(meta, st, nil, nil)
			require.NoError(t, err)
			block := min(v.Storage().BlockSize, D)
			cpr, spr := D, 1 // codes and scales per row
			if st.Quantization == tensor.NF4 {
				cpr, spr = D/2, D/block
			}
			// Row 1 starts 5 positions later: rows sit at different indexes.
			inputs := map[[2]int][2][]float64{} // (b, position) -> key, value row values
			k0 := kv(t, B, 5, H, D, func(int, int, int, int) float64 { return r.NormFloat64() })
			v0 := kv(t, B, 5, H, D, func(int, int, int, int) float64 { return r.NormFloat64() })
			v, err = v.Append(k0, v0)
			require.NoError(t, err)
			v, err = v.withIndex([]int32{0}, 0)
			require.NoError(t, err)
			for i := range 5 {
				inputs[[2]int{1, i}] = [2][]float64{token(t, k0, 1, i), token(t, v0, 1, i)}
			}

			var prev View
			var prevK []float64
			for step := range 30 {
				q := 1
				if step == 0 {
					q = 7 // a prefill chunk
				}
				scale := math.Ldexp(1, step%5-2)
				key := kv(t, B, q, H, D, func(int, int, int, int) float64 { return scale * r.NormFloat64() })
				value := kv(t, B, q, H, D, func(int, int, int, int) float64 { return scale * r.NormFloat64() })
				old := v.Index()
				var next View
				var k, val tensor.Tensor
				if step%2 == 0 {
					k, val, _, next, err = v.ConcatenateToCache(key, key, value, Mask{}, ConcatOptions{})
					require.NoError(t, err)
				} else {
					next, err = v.Append(key, value)
					require.NoError(t, err)
					k, val = next.Key(), next.Value()
				}
				// Stored form.
				require.Equal(t, st.Quantization, next.Storage().Quantization)
				require.Equal(t, []tensor.DType{map[tensor.Quantization]tensor.DType{tensor.Int8: tensor.I8, tensor.NF4: tensor.U8}[st.Quantization], st.DType},
					[]tensor.DType{next.KeyCodes().DType(), next.KeyScales().DType()})
				// The written rows: exactly the whole-tensor quantizers' output.
				wantKC, wantKS := quantRef(t, next.Storage(), key, D)
				wantVC, wantVS := quantRef(t, next.Storage(), value, D)
				for b := range B {
					row := (b*S + int(old[b])) * H // first (b, s, h) row written
					n := q * H
					assert.Equal(t, wantKC[b*n*cpr:(b+1)*n*cpr], readCodes(t, next.KeyCodes(), row*cpr, n*cpr), "step %d row %d key codes", step, b)
					assert.Equal(t, wantKS[b*n*spr:(b+1)*n*spr], readScales(t, next.KeyScales(), row*spr, n*spr), "step %d row %d key scales", step, b)
					assert.Equal(t, wantVC[b*n*cpr:(b+1)*n*cpr], readCodes(t, next.ValueCodes(), row*cpr, n*cpr), "step %d row %d value codes", step, b)
					assert.Equal(t, wantVS[b*n*spr:(b+1)*n*spr], readScales(t, next.ValueScales(), row*spr, n*spr), "step %d row %d value scales", step, b)
					for i := range q {
						inputs[[2]int{b, int(old[b]) + i}] = [2][]float64{token(t, key, b, i), token(t, value, b, i)}
					}
				}
				// Rows written before keep their stored form.
				if step > 0 {
					for b := range B {
						n := int(old[b]) * H
						assert.Equal(t, readCodes(t, v.KeyCodes(), b*S*H*cpr, n*cpr), readCodes(t, next.KeyCodes(), b*S*H*cpr, n*cpr))
						assert.Equal(t, readScales(t, v.ValueScales(), b*S*H*spr, n*spr), readScales(t, next.ValueScales(), b*S*H*spr, n*spr))
					}
				}
				// Reads: dequantized, within the error bound, zeros past the index.
				assert.Equal(t, st.DType, k.DType())
				for b := range B {
					for s := range S {
						gotK, gotV := pos(t, k, b, s), pos(t, val, b, s)
						in, written := inputs[[2]int{b, s}]
						if s >= int(next.Index()[b]) {
							assert.Equal(t, zeros(H*D), gotK, "step %d (%d, %d) past the index", step, b, s)
							continue
						}
						require.True(t, written, "(%d, %d)", b, s)
						for h := range H {
							checkBound(t, st, block, in[0][h*D:(h+1)*D], gotK[h*D:(h+1)*D])
							checkBound(t, st, block, in[1][h*D:(h+1)*D], gotV[h*D:(h+1)*D])
						}
					}
				}
				// The previous version is unchanged.
				if prevK != nil {
					assert.Equal(t, prevK, prev.Key().Float64s())
				}
				prev, prevK = next, k.Float64s()
				v = next
			}
			assert.Equal(t, []int32{36, 41}, v.Index())
		})
	}
}

// checkBound checks one row of D read values against the input row: int8
// within scale/2 plus dtype rounding, NF4 within half the largest table gap
// times the block's absmax plus dtype rounding (see kvquant's
// TestErrorBounds for the derivation).
func checkBound(t *testing.T, st Storage, block int, in, got []float64) {
	t.Helper()
	u := map[tensor.DType]float64{tensor.BFloat16: 0x1p-8, tensor.Float16: 0x1p-11, tensor.Float32: 0x1p-24}[st.DType]
	x := make([]float64, len(in))
	for i, v := range in {
		x[i] = st.DType.Round(v)
	}
	for i := range x {
		var bound float64
		if st.Quantization == tensor.Int8 {
			amax := 0.0
			for _, v := range x {
				amax = max(amax, math.Abs(v))
			}
			bound = amax/254*(1+u) + 3*amax*u + st.DType.Tiny()
		} else {
			absmax := 0.0
			for _, v := range x[i/block*block : (i/block+1)*block] {
				absmax = max(absmax, math.Abs(v))
			}
			bound = (0.3038/2 + 2*u) * absmax
		}
		require.LessOrEqual(t, math.Abs(x[i]-got[i]), bound, "element %d: x %g read %g", i, x[i], got[i])
	}
}

// TestQuantizedNumBytes checks the stored size against numbers worked out
// by hand for a cache of 2 layers, batch 2, 16 positions, 2 heads, head dim
// 64: 2·16·2 = 64 rows of 64 values per tensor, 4 tensors.
func TestQuantizedNumBytes(t *testing.T) {
	meta := testMeta(t, 2, 16, 2, 64, 2)
	for _, tc := range []struct {
		name string
		st   Storage
		want int
	}{
		{"bf16", Storage{DType: tensor.BFloat16}, 4 * 64 * 64 * 2},                                                          // 32768
		{"f32", Storage{DType: tensor.Float32}, 4 * 64 * 64 * 4},                                                            // 65536
		{"int8 bf16 scales", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, 4 * 64 * (64 + 2)},                 // 16896
		{"nf4/64 bf16 absmax", Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}, 4 * 64 * (32 + 2)},                // 8704
		{"nf4/16 f32 absmax", Storage{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 16}, 4 * 64 * (32 + 4*4)}, // 12288
	} {
		c, err := InitStorage(meta, tc.st, nil)
		require.NoError(t, err)
		assert.Equal(t, tc.want, c.NumBytes(), tc.name)
		v, err := c.View(1)
		require.NoError(t, err)
		assert.Equal(t, tc.want/2, v.NumBytes(), tc.name)
	}
	assert.Equal(t, 32768, 4*64*64*2)
	assert.Equal(t, 16896, 4*64*(64+2))
	assert.Equal(t, 8704, 4*64*(32+2))
	assert.Equal(t, 0, View{}.NumBytes())
	assert.Equal(t, 0, InitEmpty(3).NumBytes())
}

// quantizedPrefilled returns a one-layer cache of st whose rows hold n and
// n-1 positions.
func quantizedPrefilled(t *testing.T, meta Metadata, st Storage, n, w int) Cache {
	t.Helper()
	c, err := InitStorage(meta, st, nil)
	require.NoError(t, err)
	v, err := c.View(0)
	require.NoError(t, err)
	x := kv(t, meta.BatchSize, n, meta.KeyHeads, meta.KeyDim, tokenVal(w))
	v, err = v.Append(x, x)
	require.NoError(t, err)
	idx := v.Index()
	idx[len(idx)-1]--
	v, err = v.withIndex(idx, 0)
	require.NoError(t, err)
	c, err = c.WithView(0, v)
	require.NoError(t, err)
	return c
}

func TestQuantizedInsert(t *testing.T) {
	st := Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 4}
	big := testMeta(t, 4, 8, 2, 8, 1)
	small := testMeta(t, 2, 8, 2, 8, 1)
	dst := quantizedPrefilled(t, big, st, 3, 1)
	src := quantizedPrefilled(t, small, st, 6, 2)
	got, err := dst.Insert(src, 1)
	require.NoError(t, err)
	gv, _ := got.View(0)
	sv, _ := src.View(0)
	dv, _ := dst.View(0)
	assert.Equal(t, []int32{3, 6, 5, 2}, gv.Index())
	// Rows 1, 2 share src's chunks, codes and scales alike: no copy.
	perRow := gv.KeyCodes().NumChunks() / 4
	for c := range 2 * perRow {
		assert.True(t, gv.KeyCodes().SharesChunk(perRow+c, sv.KeyCodes(), c))
		assert.True(t, gv.ValueScales().SharesChunk(perRow+c, sv.ValueScales(), c))
	}
	assert.True(t, gv.IsQuantized())
	// Reads: rows 1, 2 are src's rows, rows 0, 3 dst's.
	for b, want := range []struct {
		v View
		b int
	}{{dv, 0}, {sv, 0}, {sv, 1}, {dv, 3}} {
		assert.Equal(t, visible(t, want.v.Key(), want.v.Index())[want.b], visible(t, gv.Key(), gv.Index())[b], "row %d", b)
	}

	// Storage must match.
	int8Src := quantizedPrefilled(t, small, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, 2, 3)
	_, err = dst.Insert(int8Src, 0)
	require.ErrorIs(t, err, ErrIncompatible)
	assert.Contains(t, err.Error(), "want equal S, heads, dims, dtype and quantization")
	plainSrc := prefilled(t, small, 2, 3)
	_, err = dst.Insert(plainSrc, 0)
	require.ErrorIs(t, err, ErrIncompatible)
}

// TestQuantizedIndexGrowthFreezes is TestIndexGrowthFreezes for a
// quantized view: positions exposed by InsertIndex keep their stored codes
// and scales whatever a sibling version appends.
func TestQuantizedIndexGrowthFreezes(t *testing.T) {
	meta := testMeta(t, 1, 8, 1, 4, 1)
	v, err := NewViewStorage(meta, Storage{DType: tensor.Float32, Quantization: tensor.Int8}, nil, nil)
	require.NoError(t, err)
	v, err = v.Append(kv(t, 1, 2, 1, 4, tokenVal(1)), kv(t, 1, 2, 1, 4, tokenVal(1)))
	require.NoError(t, err)
	short, err := v.withIndex([]int32{1}, 0) // forget position 1
	require.NoError(t, err)
	grown, err := short.withIndex([]int32{3}, 0) // expose positions 1, 2 again
	require.NoError(t, err)
	want := grown.Key().Float64s()
	wantCodes := grown.KeyCodes().Bytes()
	// A sibling of short appends at position 1: grown must not see it.
	_, err = short.Append(kv(t, 1, 2, 1, 4, tokenVal(9)), kv(t, 1, 2, 1, 4, tokenVal(9)))
	require.NoError(t, err)
	assert.Equal(t, want, grown.Key().Float64s())
	assert.Equal(t, wantCodes[:3*4], grown.KeyCodes().Bytes()[:3*4])
	assert.Equal(t, pos(t, v.Key(), 0, 1), pos(t, grown.Key(), 0, 1), "position 1 is still the first write's")
}

func TestQuantizedPureRoundTrip(t *testing.T) {
	meta := testMeta(t, 2, 8, 2, 8, 1)
	for _, st := range []Storage{{DType: tensor.BFloat16, Quantization: tensor.Int8}, {DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: 4}} {
		c := quantizedPrefilled(t, meta, st, 5, 4)
		p, m := c.ToPure()
		assert.Equal(t, st.DType, p[0].KeyScales.DType())
		back, err := FromPure(p, m)
		require.NoError(t, err)
		v, _ := c.View(0)
		bv, _ := back.View(0)
		assert.Equal(t, v.Storage(), bv.Storage())
		assert.True(t, v.KeyCodes().SharesChunk(0, bv.KeyCodes(), 0), "FromPure shares ToPure's chunks")
		assert.Equal(t, v.Key().Float64s(), bv.Key().Float64s())
		// Dense copies of the parts are accepted too (rechunked).
		dense := p[0]
		dense.Key = tensor.Must(tensor.FromBytes(dense.Key.DType(), dense.Key.Bytes(), dense.Key.Shape()...))
		dense.ValueScales = tensor.Must(dense.ValueScales.AsType(st.DType))
		back, err = FromPure(Pure{dense}, m)
		require.NoError(t, err)
		bv, _ = back.View(0)
		assert.Equal(t, v.Value().Float64s(), bv.Value().Float64s())
	}

	c := quantizedPrefilled(t, meta, Storage{DType: tensor.BFloat16, Quantization: tensor.NF4, BlockSize: 4}, 2, 1)
	p, m := c.ToPure()
	for name, tc := range map[string]struct {
		edit func(pv *PureView)
		err  error
		msg  string
	}{
		"no scales":          {func(pv *PureView) { pv.KeyScales = tensor.Tensor{} }, ErrDType, "uint8 codes need key and value scales of one dtype"},
		"no block size":      {func(pv *PureView) { pv.BlockSize = 0 }, ErrQuantization, "NF4 codes with block size 0"},
		"block not dividing": {func(pv *PureView) { pv.BlockSize = 3 }, ErrQuantization, "nf4 block size 3 does not divide the head dim 8"},
		"scales shape": {func(pv *PureView) {
			pv.KeyScales = tensor.Must(tensor.New(tensor.BFloat16, 2, 8, 2, 3))
		}, ErrShape, "key scales have shape [2 8 2 3], want [2 8 2 2]"},
		"codes shape": {func(pv *PureView) {
			pv.Value = tensor.Must(tensor.New(tensor.U8, 2, 8, 2, 8))
		}, ErrShape, "value has shape [2 8 2 8], want [2 8 2 4]"},
		"scales with values": {func(pv *PureView) {
			pv.Key = tensor.Must(tensor.New(tensor.BFloat16, 2, 8, 2, 8))
			pv.Value = pv.Key
			pv.BlockSize = 0
		}, ErrDType, "given with bfloat16 values"},
		"block with int8": {func(pv *PureView) {
			pv.Key = tensor.Must(tensor.New(tensor.I8, 2, 8, 2, 8))
			pv.Value = pv.Key
		}, ErrQuantization, "block size 4 given with int8 codes"},
	} {
		t.Run(name, func(t *testing.T) {
			pv := p[0]
			tc.edit(&pv)
			_, err := FromPure(Pure{pv}, m)
			require.ErrorIs(t, err, tc.err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestQuantizedReadCostsVisiblePositions checks that reading a quantized
// cache dequantizes the visible positions only: the chunks past each row's
// index stay unallocated in what ConcatenateToCache returns.
func TestQuantizedReadCostsVisiblePositions(t *testing.T) {
	meta := testMeta(t, 2, 512, 2, 8, 1) // chunks of 64 positions, 8 per row
	v, err := NewViewStorage(meta, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, nil, nil)
	require.NoError(t, err)
	x := kv(t, 2, 70, 2, 8, tokenVal(1)) // positions 0..69: chunks 0 and 1 of each row
	k, val, _, next, err := v.ConcatenateToCache(x, x, x, Mask{}, ConcatOptions{})
	require.NoError(t, err)
	for _, c := range []tensor.Tensor{k, val, next.Key()} {
		require.Equal(t, 16, c.NumChunks())
		for ci := range 16 {
			assert.Equal(t, ci%8 < 2, c.SharesChunk(ci, c, ci), "chunk %d allocated", ci)
		}
	}
	in, got := token(t, x, 1, 69), pos(t, k, 1, 69)
	checkBound(t, Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}, 0, in[:8], got[:8])
}
