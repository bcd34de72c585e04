package transformer

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestChunkPositions(t *testing.T) {
	for _, tc := range []struct{ s, want int }{
		{1, 1}, {2, 2}, {3, 1}, {6, 2}, {8, 8}, {12, 4}, {64, 64}, {96, 32}, {100, 4}, {128, 64}, {32768, 64}, {65, 1},
	} {
		assert.Equal(t, tc.want, chunkPositions(tc.s), "S=%d", tc.s)
	}
}

func TestNewView(t *testing.T) {
	meta, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 12, KeyHeads: Ptr(3), ValueHeads: Ptr(2), KeyDim: Ptr(4), ValueDim: Ptr(5)})
	require.NoError(t, err)
	starts := []int32{0, 3}
	v, err := NewView(meta, tensor.BFloat16, starts, Ptr(7))
	require.NoError(t, err)
	starts[1] = 9
	assert.False(t, v.IsEmpty())
	assert.True(t, v.Key().HasShape(2, 12, 3, 4))
	assert.True(t, v.Value().HasShape(2, 12, 2, 5))
	assert.Equal(t, tensor.BFloat16, v.DType())
	assert.Equal(t, 4*3*4, v.Key().ChunkLen(), "chunks of C=4 positions of one row")
	assert.Equal(t, 4*2*5, v.Value().ChunkLen())
	assert.Equal(t, []int32{0, 0}, v.Index())
	assert.Equal(t, []int32{0, 3}, v.Starts(), "starts are copied")
	l, ok := v.LayerIndex()
	assert.True(t, ok)
	assert.Equal(t, 7, l)
	assert.Equal(t, meta, v.Metadata())
	assert.Equal(t, "TransformerCacheView(key=bfloat16[2 12 3 4], value=bfloat16[2 12 2 5], layer_index=7)", v.String())
	assert.Equal(t, zeros(2*12*3*4), v.Key().Float64s())

	// Getters return copies.
	v.Index()[0] = 5
	v.Starts()[0] = 5
	assert.Equal(t, []int32{0, 0}, v.Index())
	assert.Equal(t, []int32{0, 3}, v.Starts())

	nv, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	_, ok = nv.LayerIndex()
	assert.False(t, ok)
	assert.Equal(t, []int32{0, 0}, nv.Starts())
	assert.Contains(t, nv.String(), "layer_index=None")

	_, err = NewView(meta, tensor.DType(0), nil, nil)
	require.ErrorIs(t, err, ErrDType)
	_, err = NewView(meta, tensor.Float32, []int32{1}, nil)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "starts has 1 values, want one per batch row (2)")
	_, err = NewView(meta, tensor.Float32, []int32{1, 13}, nil)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "starts[1] = 13")
	_, err = NewView(Metadata{}, tensor.Float32, nil, nil)
	require.ErrorIs(t, err, ErrMetadata)

	var empty View
	assert.True(t, empty.IsEmpty())
	assert.Equal(t, "TransformerCacheView(empty)", empty.String())
}

// TestTwoStepDecode ports EasyDeL's transformer_cache_test (spec section 13):
// two single-token writes, index 0 -> 1 -> 2, key[:,0] = k1, key[:,1] = k2,
// the returned k/v are the stored ones and the mask is (B,1,1,S) with
// [...,0,0] and [...,0,1] true.
func TestTwoStepDecode(t *testing.T) {
	const B, S, H, D = 2, 8, 2, 4
	meta := testMeta(t, B, S, H, D, 1)
	v0, err := NewView(meta, tensor.Float32, nil, Ptr(0))
	require.NoError(t, err)
	attn := fullMask(B, S)
	causal := CausalMask(S)
	q := kv(t, B, 1, H, D, func(int, int, int, int) float64 { return 1 })
	k1, v1in := kv(t, B, 1, H, D, tokenVal(1)), kv(t, B, 1, H, D, tokenVal(2))
	k2, v2in := kv(t, B, 1, H, D, tokenVal(3)), kv(t, B, 1, H, D, tokenVal(4))

	kc, vc, mask1, v1, err := v0.ConcatenateToCache(q, k1, v1in, attn, ConcatOptions{CausalMask: causal})
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 1}, v1.Index())
	assert.True(t, kc.Equal(v1.Key()))
	assert.True(t, vc.Equal(v1.Value()))
	assert.Equal(t, []int{B, 1, 1, S}, mask1.Shape)
	assert.Equal(t, "x.......\n\nx.......", mask1.String())

	kc, vc, mask2, v2, err := v1.ConcatenateToCache(q, k2, v2in, attn, ConcatOptions{CausalMask: causal})
	require.NoError(t, err)
	assert.Equal(t, []int32{2, 2}, v2.Index())
	assert.True(t, kc.Equal(v2.Key()))
	assert.True(t, vc.Equal(v2.Value()))
	for b := 0; b < B; b++ {
		assert.Equal(t, token(t, k1, b, 0), pos(t, v2.Key(), b, 0))
		assert.Equal(t, token(t, k2, b, 0), pos(t, v2.Key(), b, 1))
		assert.Equal(t, token(t, v1in, b, 0), pos(t, v2.Value(), b, 0))
		assert.Equal(t, token(t, v2in, b, 0), pos(t, v2.Value(), b, 1))
		assert.True(t, mask2.At(b, 0, 0, 0))
		assert.True(t, mask2.At(b, 0, 0, 1))
	}
	assert.Equal(t, []int{B, 1, 1, S}, mask2.Shape)
	assert.Equal(t, "xx......\n\nxx......", mask2.String())
	assert.Equal(t, []int32{0, 0}, v0.Index(), "the base view is unchanged")
	assert.Equal(t, []int32{1, 1}, v1.Index())
}

// withIndex sets a view's index for tests (through InsertIndex's path).
func withIndex(t testing.TB, v View, index ...int32) View {
	t.Helper()
	nv, err := v.withIndex(index, 0)
	require.NoError(t, err)
	return nv
}

// TestConcatenateMasks checks the returned mask against grids derived by
// hand from spec 6.2: mask[b,0,i,j] = causal[old+i, j] && attn && j < old+q.
func TestConcatenateMasks(t *testing.T) {
	const B, S, H, D = 2, 6, 1, 2
	meta := testMeta(t, B, S, H, D, 1)
	base, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	twoD := maskFromRows(t, []int{B, S}, "xxxxxx", "..xxxx") // row 1 is left-padded by 2
	cases := []struct {
		name   string
		index  []int32
		q      int
		attn   Mask
		causal Mask
		want   string
	}{
		{"prefill, causal, no padding", []int32{0, 0}, 3, fullMask(B, S), CausalMask(S),
			"x.....\nxx....\nxxx...\n\nx.....\nxx....\nxxx..."},
		{"prefill, causal, 2-D left padding", []int32{0, 0}, 3, twoD, CausalMask(S),
			"x.....\nxx....\nxxx...\n\n......\n......\n..x..."},
		{"rows at different indexes, causal, 2-D", []int32{0, 2}, 3, twoD, CausalMask(S),
			"x.....\nxx....\nxxx...\n\n..x...\n..xx..\n..xxx."},
		{"no causal: the chunk sees itself", []int32{0, 2}, 3, twoD, Mask{},
			"xxx...\nxxx...\nxxx...\n\n..xxx.\n..xxx.\n..xxx."},
		{"no causal, zero attention mask", []int32{1, 0}, 2, Mask{}, Mask{},
			"xxx...\nxxx...\n\nxx....\nxx...."},
		{"4-D (B,1,q,S) attention", []int32{0, 2}, 2,
			maskFromRows(t, []int{B, 1, 2, S}, "x.xxxx", "xxxxx.", "xxx.xx", ".xxxxx"), CausalMask(S),
			"x.....\nxx....\n\nxxx...\n.xxx.."},
		{"4-D (B,1,1,S) attention broadcasts over q", []int32{0, 2}, 2,
			maskFromRows(t, []int{B, 1, 1, S}, "x.xxxx", "xx.xxx"), CausalMask(S),
			"x.....\nx.....\n\nxx....\nxx.x.."},
		{"batched causal mask (B,1,S,S), one row reversed", []int32{0, 1}, 2, fullMask(B, S),
			maskFromRows(t, []int{B, 1, S, S},
				"x.....", "xx....", "xxx...", "xxxx..", "xxxxx.", "xxxxxx",
				"xxxxxx", ".xxxxx", "..xxxx", "...xxx", "....xx", ".....x"),
			"x.....\nxx....\n\n.xx...\n..x..."},
		{"causal mask longer than S", []int32{2, 0}, 1, fullMask(B, S), CausalMask(S + 3),
			"xxx...\n\nx....."},
		{"decode at the last position", []int32{5, 3}, 1, twoD, CausalMask(S),
			"xxxxxx\n\n..xx.."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := withIndex(t, base, tc.index...)
			q := kv(t, B, tc.q, 4, 3, func(int, int, int, int) float64 { return 0 })
			k := kv(t, B, tc.q, H, D, tokenVal(1))
			_, _, mask, next, err := v.ConcatenateToCache(q, k, k, tc.attn, ConcatOptions{CausalMask: tc.causal})
			require.NoError(t, err)
			assert.Equal(t, []int{B, 1, tc.q, S}, mask.Shape)
			assert.Equal(t, strings.TrimSpace(tc.want), mask.String())
			for b, old := range tc.index {
				assert.Equal(t, old+int32(tc.q), next.Index()[b])
			}
		})
	}
}

// TestLeftPadding prefills a left-padded batch and decodes one token: pad
// columns stay masked, starts is kept, and the decode row sees the prompt.
func TestLeftPadding(t *testing.T) {
	const B, S, H, D = 2, 8, 1, 2
	meta := testMeta(t, B, S, H, D, 1)
	v0, err := NewView(meta, tensor.Float32, []int32{0, 2}, nil)
	require.NoError(t, err)
	// Row 0: prompt of 4 tokens; row 1: 2 pad tokens then 2 prompt tokens.
	attn := maskFromRows(t, []int{B, S}, "xxxxxxxx", "..xxxxxx")
	q := kv(t, B, 4, 1, 1, func(int, int, int, int) float64 { return 0 })
	k := kv(t, B, 4, H, D, tokenVal(1))
	_, _, mask, v1, err := v0.ConcatenateToCache(q, k, k, attn, ConcatOptions{CausalMask: CausalMask(S)})
	require.NoError(t, err)
	assert.Equal(t, "x.......\nxx......\nxxx.....\nxxxx....\n\n........\n........\n..x.....\n..xx....", mask.String())
	assert.Equal(t, []int32{0, 2}, v1.Starts())

	q1 := kv(t, B, 1, 1, 1, func(int, int, int, int) float64 { return 0 })
	k1 := kv(t, B, 1, H, D, tokenVal(2))
	_, _, mask, v2, err := v1.ConcatenateToCache(q1, k1, k1, attn, ConcatOptions{CausalMask: CausalMask(S)})
	require.NoError(t, err)
	assert.Equal(t, "xxxxx...\n\n..xxx...", mask.String())
	assert.Equal(t, []int32{5, 5}, v2.Index())
	assert.Equal(t, []int32{0, 2}, v2.Starts(), "writes never change starts")
}

// TestTokenTypes checks bidirectional attention inside non-zero token-type
// segments for B=2 with different layouts, rows at different indexes (grids
// derived by hand; token t of row b sits at column index[b]+t).
func TestTokenTypes(t *testing.T) {
	const B, S, H, D = 2, 6, 1, 1
	meta := testMeta(t, B, S, H, D, 1)
	base, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	v := withIndex(t, base, 0, 1)
	tt := [][]int32{{0, 1, 1, 0}, {2, 2, 0, 3}}
	q := kv(t, B, 4, 1, 1, func(int, int, int, int) float64 { return 0 })
	k := kv(t, B, 4, H, D, tokenVal(1))
	_, _, mask, _, err := v.ConcatenateToCache(q, k, k, fullMask(B, S), ConcatOptions{CausalMask: CausalMask(S), TokenTypeIDs: tt})
	require.NoError(t, err)
	want := "" +
		"x.....\n" + // type 0: causal only
		"xxx...\n" + // type 1 sees the later type-1 token
		"xxx...\n" +
		"xxxx..\n" +
		"\n" +
		"xxx...\n" + // row 1 starts at 1: its type-2 pair is columns 1 and 2
		"xxx...\n" +
		"xxxx..\n" +
		"xxxxx."
	assert.Equal(t, want, mask.String())

	// An attention mask still removes columns the token types open.
	attn := maskFromRows(t, []int{B, S}, "xx.xxx", "xxxxxx")
	_, _, mask, _, err = v.ConcatenateToCache(q, k, k, attn, ConcatOptions{CausalMask: CausalMask(S), TokenTypeIDs: tt})
	require.NoError(t, err)
	assert.Equal(t, "x.....\nxx....\nxx....\nxx.x..", strings.SplitN(mask.String(), "\n\n", 2)[0])

	// Ignored for q == 1 and without a causal mask, as in EasyDeL.
	q1, k1 := kv(t, B, 1, 1, 1, tokenVal(0)), kv(t, B, 1, H, D, tokenVal(0))
	_, _, mask, _, err = v.ConcatenateToCache(q1, k1, k1, fullMask(B, S), ConcatOptions{CausalMask: CausalMask(S), TokenTypeIDs: [][]int32{{1, 1}, {1, 1}}})
	require.NoError(t, err)
	assert.Equal(t, "x.....\n\nxx....", mask.String())
	_, _, mask, _, err = v.ConcatenateToCache(q, k, k, fullMask(B, S), ConcatOptions{TokenTypeIDs: [][]int32{{1, 0, 0, 0}, {0, 0, 0, 0}}})
	require.NoError(t, err)
	assert.Equal(t, strings.Repeat("xxxx..\n", 4)+"\n"+strings.TrimSuffix(strings.Repeat("xxxxx.\n", 4), "\n"), mask.String())

	// Shape errors.
	for _, bad := range [][][]int32{{{1, 1, 1, 1}}, {{1, 1, 1, 1}, {1, 1, 1}}, {{1, 1, 1}, {1, 1, 1}}} {
		_, _, _, _, err = v.ConcatenateToCache(q, k, k, fullMask(B, S), ConcatOptions{CausalMask: CausalMask(S), TokenTypeIDs: bad})
		require.ErrorIs(t, err, ErrShape)
		assert.Contains(t, err.Error(), "token_type_ids")
	}
}

// TestContinuousBatching writes rows at different indexes: each row's data
// lands at its own index, other rows and positions are untouched.
func TestContinuousBatching(t *testing.T) {
	const B, S, H, D = 3, 16, 2, 3
	meta := testMeta(t, B, S, H, D, 1)
	v0, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	// Fill positions 0..7 of every row with write 1, then spread the indexes.
	fill := kv(t, B, 8, H, D, tokenVal(1))
	v1, err := v0.Append(fill, fill)
	require.NoError(t, err)
	v1 = withIndex(t, v1, 2, 5, 7) // rows hold 2, 5 and 7 tokens
	before := [][][]float64{}
	for b := 0; b < B; b++ {
		var row [][]float64
		for s := 0; s < S; s++ {
			row = append(row, pos(t, v1.Key(), b, s))
		}
		before = append(before, row)
	}

	k := kv(t, B, 3, H, D, tokenVal(2))
	val := kv(t, B, 3, H, D, tokenVal(3))
	v2, err := v1.Append(k, val)
	require.NoError(t, err)
	assert.Equal(t, []int32{5, 8, 10}, v2.Index())
	for b, old := range []int{2, 5, 7} {
		for s := 0; s < S; s++ {
			switch {
			case s >= old && s < old+3:
				assert.Equal(t, token(t, k, b, s-old), pos(t, v2.Key(), b, s), "row %d pos %d", b, s)
				assert.Equal(t, token(t, val, b, s-old), pos(t, v2.Value(), b, s), "row %d pos %d", b, s)
			case s < old:
				assert.Equal(t, before[b][s], pos(t, v2.Key(), b, s), "row %d pos %d untouched", b, s)
				assert.Equal(t, token(t, fill, b, s), pos(t, v2.Value(), b, s))
			}
		}
	}
	// The base still sees its own bytes.
	for b := 0; b < B; b++ {
		for s := 0; s < int(v1.Index()[b]); s++ {
			assert.Equal(t, before[b][s], pos(t, v1.Key(), b, s))
		}
	}
}

func TestOverflow(t *testing.T) {
	const B, S, H, D = 2, 4, 1, 2
	meta := testMeta(t, B, S, H, D, 1)
	v, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	v = withIndex(t, v, 1, 3)
	k := kv(t, B, 2, H, D, tokenVal(1))
	q := kv(t, B, 2, 1, 1, tokenVal(0))
	_, err = v.Append(k, k)
	require.ErrorIs(t, err, ErrOverflow)
	assert.Contains(t, err.Error(), "row 1 has index 3, writing 2 positions needs 5 > sequence_length 4")
	_, _, _, _, err = v.ConcatenateToCache(q, k, k, fullMask(B, S), ConcatOptions{CausalMask: CausalMask(S)})
	require.ErrorIs(t, err, ErrOverflow)

	// Exactly filling the cache is fine.
	k1 := kv(t, B, 1, H, D, tokenVal(1))
	full, err := v.Append(k1, k1)
	require.NoError(t, err)
	assert.Equal(t, []int32{2, 4}, full.Index())
	_, err = full.Append(k1, k1)
	require.ErrorIs(t, err, ErrOverflow)
	assert.Contains(t, err.Error(), "row 1 has index 4")
}

func TestConcatenateErrors(t *testing.T) {
	const B, S, H, D = 2, 4, 2, 3
	meta := testMeta(t, B, S, H, D, 1)
	v, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	q := kv(t, B, 1, 4, 3, tokenVal(0))
	good := kv(t, B, 1, H, D, tokenVal(1))
	attn := fullMask(B, S)
	cases := []struct {
		name       string
		q, k, v    tensor.Tensor
		attn, caus Mask
		want       string
		sentinel   error
	}{
		{"query batch", kv(t, 3, 1, 4, 3, tokenVal(0)), good, good, attn, Mask{}, "query has shape [3 1 4 3], want (batch 2", ErrShape},
		{"query absent", tensor.Tensor{}, good, good, attn, Mask{}, "query has shape []", ErrShape},
		{"key heads", q, kv(t, B, 1, 3, D, tokenVal(1)), good, attn, Mask{}, "key has shape [2 1 3 3], want (batch 2, q 1, heads 2, dim 3)", ErrShape},
		{"value dim", q, good, kv(t, B, 1, H, 4, tokenVal(1)), attn, Mask{}, "value has shape [2 1 2 4], want (batch 2, q 1, heads 2, dim 3)", ErrShape},
		{"key length differs from query", q, kv(t, B, 2, H, D, tokenVal(1)), good, attn, Mask{}, "key has shape [2 2 2 3], want (batch 2, q 1", ErrShape},
		{"key batch", q, kv(t, 1, 1, H, D, tokenVal(1)), good, attn, Mask{}, "key has shape [1 1 2 3]", ErrShape},
		{"value absent", q, good, tensor.Tensor{}, attn, Mask{}, "value is absent", ErrDType},
		{"2-D attention of length q", q, good, good, fullMask(B, 1), Mask{}, "attention mask has shape [2 1], want (2, 4) or (2, 1, 1|1, 4)", ErrShape},
		{"3-D attention", q, good, good, fullMask(B, 1, S), Mask{}, "attention mask has shape [2 1 4]", ErrShape},
		{"4-D attention with heads", q, good, good, fullMask(B, 2, 1, S), Mask{}, "attention mask has shape [2 2 1 4]", ErrShape},
		{"invalid attention data", q, good, good, Mask{Shape: []int{B, S}, Data: []bool{true}}, Mask{}, "holds 1 values (want 8)", ErrShape},
		{"causal too short", q, good, good, attn, CausalMask(S - 1), "causal mask has shape [1 1 3 3]", ErrShape},
		{"causal bad batch", q, good, good, attn, fullMask(3, 1, S, S), "causal mask has shape [3 1 4 4]", ErrShape},
		{"causal rank 2", q, good, good, attn, fullMask(S, S), "causal mask has shape [4 4]", ErrShape},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, _, err := v.ConcatenateToCache(tc.q, tc.k, tc.v, tc.attn, ConcatOptions{CausalMask: tc.caus})
			require.ErrorIs(t, err, tc.sentinel)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	_, err = View{}.Append(good, good)
	require.ErrorIs(t, err, ErrEmpty)
	_, _, _, _, err = View{}.ConcatenateToCache(q, good, good, attn, ConcatOptions{})
	require.ErrorIs(t, err, ErrEmpty)
	_, err = v.Append(tensor.Tensor{}, good)
	require.ErrorIs(t, err, ErrDType)
}

// TestImmutableBranches writes two branches from one base: each sees its own
// data, and the base's visible bytes never change.
func TestImmutableBranches(t *testing.T) {
	const B, S, H, D = 2, 8, 2, 2
	meta := testMeta(t, B, S, H, D, 1)
	empty, err := NewView(meta, tensor.BFloat16, nil, nil)
	require.NoError(t, err)
	v0, err := empty.Append(kv(t, B, 3, H, D, tokenVal(1)), kv(t, B, 3, H, D, tokenVal(2)))
	require.NoError(t, err)
	v0Keys, v0Vals := visible(t, v0.Key(), v0.Index()), visible(t, v0.Value(), v0.Index())

	a, b := kv(t, B, 1, H, D, tokenVal(3)), kv(t, B, 1, H, D, tokenVal(4))
	q := kv(t, B, 1, 1, 1, tokenVal(0))
	_, _, _, v1, err := v0.ConcatenateToCache(q, a, a, fullMask(B, S), ConcatOptions{})
	require.NoError(t, err)
	_, _, _, v2, err := v0.ConcatenateToCache(q, b, b, fullMask(B, S), ConcatOptions{})
	require.NoError(t, err)
	// Keep writing on both branches, and once more from the base.
	c, d := kv(t, B, 2, H, D, tokenVal(5)), kv(t, B, 2, H, D, tokenVal(6))
	v1b, err := v1.Append(c, c)
	require.NoError(t, err)
	v2b, err := v2.Append(d, d)
	require.NoError(t, err)
	_, err = v0.Append(d, c)
	require.NoError(t, err)

	bf := func(x []float64) []float64 { return rounded(tensor.BFloat16, x) }
	for r := 0; r < B; r++ {
		assert.Equal(t, bf(token(t, a, r, 0)), pos(t, v1.Key(), r, 3), "v1 still sees a")
		assert.Equal(t, bf(token(t, b, r, 0)), pos(t, v2.Key(), r, 3), "v2 still sees b")
		assert.Equal(t, bf(token(t, a, r, 0)), pos(t, v1b.Key(), r, 3))
		assert.Equal(t, bf(token(t, c, r, 1)), pos(t, v1b.Key(), r, 5))
		assert.Equal(t, bf(token(t, b, r, 0)), pos(t, v2b.Value(), r, 3))
		assert.Equal(t, bf(token(t, d, r, 1)), pos(t, v2b.Value(), r, 5))
	}
	assert.Equal(t, v0Keys, visible(t, v0.Key(), v0.Index()), "base key bytes unchanged")
	assert.Equal(t, v0Vals, visible(t, v0.Value(), v0.Index()), "base value bytes unchanged")
	assert.Equal(t, v0Keys[0], visible(t, v2b.Key(), []int32{3, 3})[0], "branches share the base's prefix")
}

// TestIndexGrowthFreezes raises a row's index over positions its view never
// wrote; a later write from a sibling must not change what it sees.
func TestIndexGrowthFreezes(t *testing.T) {
	const B, S, H, D = 1, 8, 1, 2
	meta := testMeta(t, B, S, H, D, 1)
	v0, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	a := kv(t, B, 1, H, D, tokenVal(1))
	vA, err := v0.Append(a, a)
	require.NoError(t, err)
	x := withIndex(t, vA, 3) // exposes positions 1 and 2, never written
	seen := visible(t, x.Key(), x.Index())
	assert.Equal(t, append(token(t, a, 0, 0), zeros(4)...), seen[0])

	c := kv(t, B, 2, H, D, tokenVal(2))
	_, err = vA.Append(c, c) // the sibling writes positions 1 and 2
	require.NoError(t, err)
	assert.Equal(t, seen, visible(t, x.Key(), x.Index()))
	assert.Equal(t, seen, visible(t, x.Value(), x.Index()))

	// Lowering the index and growing it again keeps the stale bytes visible
	// (as EasyDeL would), frozen.
	vB, err := vA.Append(c, c)
	require.NoError(t, err)
	low := withIndex(t, vB, 1)
	high := withIndex(t, low, 3)
	seen = visible(t, high.Key(), high.Index())
	assert.Equal(t, visible(t, vB.Key(), vB.Index()), seen)
	_, err = low.Append(a, a)
	require.NoError(t, err)
	assert.Equal(t, seen, visible(t, high.Key(), high.Index()))
}

func TestDTypeConversion(t *testing.T) {
	const B, S, H, D = 1, 4, 1, 4
	meta := testMeta(t, B, S, H, D, 1)
	v, err := NewView(meta, tensor.BFloat16, nil, nil)
	require.NoError(t, err)
	in := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1.01, 1.00390625, 3.14159, -2.5}, B, 1, H, D))
	f64 := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{0.1, 1e-3, 65504, 1.0078125}, B, 1, H, D))
	q := kv(t, B, 1, 1, 1, tokenVal(0))
	k, val, _, next, err := v.ConcatenateToCache(q, in, f64, fullMask(B, S), ConcatOptions{})
	require.NoError(t, err)
	assert.Equal(t, tensor.BFloat16, k.DType())
	assert.Equal(t, tensor.BFloat16, val.DType())
	// bfloat16 has 8 significant bits: spacing 2^-7 in [1,2), 2^-6 in [2,4);
	// halfway cases round to even.
	assert.Equal(t, []float64{1.0078125, 1.0, 3.140625, -2.5}, pos(t, next.Key(), 0, 0))
	// 0.1 -> 0.10009765625, 1e-3 -> 0.00099945068359375 (2^-10 * 1.0234375),
	// 65504 -> 65536, 1.0078125 exact.
	assert.Equal(t, []float64{0.10009765625, 0.00099945068359375, 65536, 1.0078125}, pos(t, next.Value(), 0, 0))
}

// TestAppendMatchesConcatenate checks that Append writes exactly what
// ConcatenateToCache writes.
func TestAppendMatchesConcatenate(t *testing.T) {
	const B, S, H, D = 2, 8, 2, 2
	meta := testMeta(t, B, S, H, D, 1)
	v, err := NewView(meta, tensor.Float16, []int32{1, 0}, Ptr(2))
	require.NoError(t, err)
	k, val := kv(t, B, 3, H, D, tokenVal(1)), kv(t, B, 3, H, D, tokenVal(2))
	a, err := v.Append(k, val)
	require.NoError(t, err)
	_, _, _, c, err := v.ConcatenateToCache(kv(t, B, 3, 1, 1, tokenVal(0)), k, val, Mask{}, ConcatOptions{})
	require.NoError(t, err)
	assert.Equal(t, c.Index(), a.Index())
	assert.Equal(t, c.Starts(), a.Starts())
	assert.Equal(t, visible(t, c.Key(), c.Index()), visible(t, a.Key(), a.Index()))
	assert.Equal(t, visible(t, c.Value(), c.Index()), visible(t, a.Value(), a.Index()))
	l, _ := a.LayerIndex()
	assert.Equal(t, 2, l)

	// q = 0 is a no-op write.
	z := kv(t, B, 0, H, D, tokenVal(0))
	same, err := a.Append(z, z)
	require.NoError(t, err)
	assert.Equal(t, a.Index(), same.Index())
}

// TestConcurrentBranches writes many branches of one base from different
// goroutines (run with -race): each branch sees exactly its own token.
func TestConcurrentBranches(t *testing.T) {
	const B, S, H, D, N = 2, 16, 2, 4, 8
	meta := testMeta(t, B, S, H, D, 1)
	v0, err := NewView(meta, tensor.Float32, nil, nil)
	require.NoError(t, err)
	v0, err = v0.Append(kv(t, B, 3, H, D, tokenVal(1)), kv(t, B, 3, H, D, tokenVal(1)))
	require.NoError(t, err)
	inputs := make([]tensor.Tensor, N)
	for i := range inputs {
		inputs[i] = kv(t, B, 2, H, D, tokenVal(10+i))
	}
	out := make([]View, N)
	errs := make([]error, N)
	done := make(chan int)
	for i := 0; i < N; i++ {
		go func(i int) {
			out[i], errs[i] = v0.Append(inputs[i], inputs[i])
			done <- i
		}(i)
	}
	for i := 0; i < N; i++ {
		<-done
	}
	for i, v := range out {
		require.NoError(t, errs[i])
		for b := 0; b < B; b++ {
			assert.Equal(t, token(t, inputs[i], b, 0), pos(t, v.Key(), b, 3), "branch %d row %d", i, b)
			assert.Equal(t, token(t, inputs[i], b, 1), pos(t, v.Value(), b, 4), "branch %d row %d", i, b)
			assert.Equal(t, pos(t, v0.Key(), b, 2), pos(t, v.Key(), b, 2))
		}
	}
}
