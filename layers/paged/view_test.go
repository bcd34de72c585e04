package paged

import (
	"fmt"
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewView(t *testing.T) {
	meta := testMeta(2, 8, 4, 3)
	v, err := NewView(meta, tensor.BFloat16, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, v.LayerIndex())
	assert.Equal(t, meta, v.Metadata())
	assert.Equal(t, tensor.BFloat16, v.DType())
	assert.Equal(t, []int{2, 8, 4, 3}, v.KeyPages().Shape())
	assert.Equal(t, []int{2, 8, 4, 3}, v.ValuePages().Shape())
	assert.Equal(t, 4*3, v.KeyPages().ChunkLen(), "one chunk per page of one head")
	assert.Equal(t, make([]float32, 2*8*4*3), v.KeyPages().Float32s())
	assert.False(t, v.IsZero())
	assert.True(t, View{}.IsZero())

	tests := []struct {
		name  string
		meta  Metadata
		dtype tensor.DType
		layer int
		is    error
	}{
		{"layer too large", meta, tensor.Float32, 2, ErrOutOfRange},
		{"negative layer", meta, tensor.Float32, -1, ErrOutOfRange},
		{"bad dtype", meta, 0, 0, ErrDType},
		{"bad metadata", testMeta(0, 8, 4, 3), tensor.Float32, 0, ErrInvalidMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewView(tt.meta, tt.dtype, tt.layer)
			require.ErrorIs(t, err, tt.is)
		})
	}
}

func TestWritePrefillSingleChunk(t *testing.T) {
	for _, dts := range [][2]tensor.DType{{tensor.Float32, tensor.Float32}, {tensor.BFloat16, tensor.BFloat16}, {tensor.BFloat16, tensor.Float32}} {
		cacheDT, inDT := dts[0], dts[1]
		t.Run(fmt.Sprintf("cache=%s/input=%s", cacheDT, inDT), func(t *testing.T) {
			// H=2, N=8, ps=4, D=3; 8 tokens of which 6 are real; pages 5 then 2.
			v := testView(t, testMeta(2, 8, 4, 3), cacheDT)
			k, val := kvOf(t, inDT, 8, 2, 3, 1), kvOf(t, inDT, 8, 2, 3, 1000)
			got, err := v.WritePrefill(k, val, StepMetadata{PrefillLength: 6, PrefillPageTable: []int32{5, 2, 0, 0}})
			require.NoError(t, err)
			rounded := func(x []float32) []float32 { // the input as the cache dtype stores it
				out := make([]float32, len(x))
				for i, f := range x {
					out[i] = float32(cacheDT.Round(float64(f)))
				}
				return out
			}
			for p, want := range map[int][2]int{0: {5, 0}, 1: {5, 1}, 2: {5, 2}, 3: {5, 3}, 4: {2, 0}, 5: {2, 1}} {
				for h := range 2 {
					assert.Equal(t, rounded(headRow(t, k, p, h)), slot(t, got.KeyPages(), h, want[0], want[1]), "key pos %d head %d", p, h)
					assert.Equal(t, rounded(headRow(t, val, p, h)), slot(t, got.ValuePages(), h, want[0], want[1]), "value pos %d head %d", p, h)
				}
			}
			// Padding tokens 6 and 7 are not written (EasyDeL would write them).
			for h := range 2 {
				assert.Equal(t, []float32{0, 0, 0}, slot(t, got.KeyPages(), h, 2, 2))
				assert.Equal(t, []float32{0, 0, 0}, slot(t, got.ValuePages(), h, 2, 3))
			}
			// Nothing else was touched: 6 positions x 2 heads x 3 dims are non-zero.
			nonZero := 0
			for _, x := range got.KeyPages().Float32s() {
				if x != 0 {
					nonZero++
				}
			}
			assert.Equal(t, 6*2*3, nonZero)
			// A sibling written from the same base at the same positions does
			// not disturb this version.
			other := kvOf(t, inDT, 8, 2, 3, 9)
			_, err = v.WritePrefill(other, other, StepMetadata{PrefillLength: 6, PrefillPageTable: []int32{5, 2}})
			require.NoError(t, err)
			assert.Equal(t, rounded(headRow(t, k, 0, 1)), slot(t, got.KeyPages(), 1, 5, 0))
			assert.Equal(t, rounded(headRow(t, val, 5, 0)), slot(t, got.ValuePages(), 0, 2, 1))
		})
	}
}

func TestWritePrefillChunked(t *testing.T) {
	// Chunk A: 6 tokens at 0..5. Chunk B: 4 tokens at 6..9, 3 of them real.
	v := testView(t, testMeta(2, 8, 4, 3), tensor.Float32)
	table := []int32{5, 2, 6, 0}
	a, aVal := kvOf(t, tensor.Float32, 6, 2, 3, 1), kvOf(t, tensor.Float32, 6, 2, 3, 2000)
	b, bVal := kvOf(t, tensor.Float32, 4, 2, 3, 1000), kvOf(t, tensor.Float32, 4, 2, 3, 3000)
	v1, err := v.WritePrefill(a, aVal, StepMetadata{PrefillLength: 6, PrefillPageTable: table})
	require.NoError(t, err)
	v2, err := v1.WritePrefill(b, bVal, StepMetadata{PrefillLength: 9, PrefillPosition: []int32{6, 7, 8, 9}, PrefillPageTable: table})
	require.NoError(t, err)

	// Position 6 -> page 2 offset 2, 7 -> page 2 offset 3, 8 -> page 6 offset 0.
	assert.Equal(t, headRow(t, b, 0, 1), slot(t, v2.KeyPages(), 1, 2, 2))
	assert.Equal(t, headRow(t, b, 1, 0), slot(t, v2.KeyPages(), 0, 2, 3))
	assert.Equal(t, headRow(t, bVal, 2, 1), slot(t, v2.ValuePages(), 1, 6, 0))
	assert.Equal(t, []float32{0, 0, 0}, slot(t, v2.KeyPages(), 0, 6, 1), "padding at position 9 is not written")

	k, val, err := v2.Gather(table, 9)
	require.NoError(t, err)
	require.Equal(t, []int{9, 2, 3}, k.Shape())
	for p := range 9 {
		if p < 6 {
			assert.Equal(t, row(t, a, p), row(t, k, p), "key pos %d", p)
			assert.Equal(t, row(t, aVal, p), row(t, val, p), "value pos %d", p)
		} else {
			assert.Equal(t, row(t, b, p-6), row(t, k, p), "key pos %d", p)
			assert.Equal(t, row(t, bVal, p-6), row(t, val, p), "value pos %d", p)
		}
	}
	// v1 still reads chunk A.
	k1, _, err := v1.Gather(table, 6)
	require.NoError(t, err)
	assert.Equal(t, a.Float32s(), k1.Float32s())
}

func TestWritePrefillErrors(t *testing.T) {
	meta := testMeta(2, 8, 4, 3)
	v := testView(t, meta, tensor.Float32)
	k, val := kvOf(t, tensor.Float32, 8, 2, 3, 1), kvOf(t, tensor.Float32, 8, 2, 3, 1)
	table := []int32{5, 2, 0, 0}
	tests := []struct {
		name   string
		v      View
		k, val tensor.Tensor
		m      StepMetadata
		is     error
		want   string
	}{
		{"absent view", View{}, k, val, StepMetadata{PrefillLength: 8, PrefillPageTable: table}, ErrAbsentView, "no pages"},
		{"absent prefill", v, k, val, StepMetadata{DecodesPosition: []int32{0}, DecodesPageTable: [][]int32{{1}}}, ErrStep, "prefill part is absent"},
		{"position without table", v, k, val, StepMetadata{PrefillLength: 8, PrefillPosition: make([]int32, 8)}, ErrStep, "prefill_page_table is absent"},
		{"negative length", v, k, val, StepMetadata{PrefillLength: -1, PrefillPageTable: table}, ErrStep, "prefill_length -1 is negative"},
		{"length past chunk", v, k, val, StepMetadata{PrefillLength: 9, PrefillPageTable: table}, ErrOutOfRange, "prefill_length 9 outside [0, 8]"},
		{"length before chunk", v, k, val, StepMetadata{PrefillLength: 3, PrefillPosition: []int32{4, 5, 6, 7, 8, 9, 10, 11}, PrefillPageTable: table},
			ErrOutOfRange, "prefill_length 3 outside [4, 12]"},
		{"negative start", v, k, val, StepMetadata{PrefillLength: 3, PrefillPosition: []int32{-1, 0, 1, 2, 3, 4, 5, 6}, PrefillPageTable: table},
			ErrOutOfRange, "starts at position -1"},
		{"positions length", v, k, val, StepMetadata{PrefillLength: 3, PrefillPosition: []int32{0, 1, 2}, PrefillPageTable: table},
			ErrShape, "prefill_position has 3 entries for a chunk of 8 tokens"},
		{"positions not consecutive", v, k, val, StepMetadata{PrefillLength: 4, PrefillPosition: []int32{0, 1, 3, 4, 5, 6, 7, 8}, PrefillPageTable: table},
			ErrStep, "prefill_position[2] is 3, want 2"},
		{"past page table", v, k, val, StepMetadata{PrefillLength: 8, PrefillPageTable: []int32{5}},
			ErrOutOfRange, "position 7 needs logical page 1, but the page table has 1 entries (4 positions)"},
		{"page too large", v, k, val, StepMetadata{PrefillLength: 8, PrefillPageTable: []int32{5, 8}},
			ErrOutOfRange, "page 8 at prefill_page_table[1] (pool has pages 0..7)"},
		{"negative page", v, k, val, StepMetadata{PrefillLength: 2, PrefillPageTable: []int32{-3}},
			ErrOutOfRange, "page -3 at prefill_page_table[0]"},
		{"key rank", v, tensor.Must(tensor.New(tensor.Float32, 8, 6)), val, StepMetadata{PrefillLength: 8, PrefillPageTable: table},
			ErrShape, "key has shape [8 6], want (T, 2, 3)"},
		{"key heads", v, kvOf(t, tensor.Float32, 8, 3, 3, 0), val, StepMetadata{PrefillLength: 8, PrefillPageTable: table},
			ErrShape, "key has shape [8 3 3]"},
		{"value shape", v, k, kvOf(t, tensor.Float32, 7, 2, 3, 0), StepMetadata{PrefillLength: 7, PrefillPageTable: table},
			ErrShape, "value has shape [7 2 3], key has [8 2 3]"},
		{"dtype mismatch", v, k, kvOf(t, tensor.BFloat16, 8, 2, 3, 0), StepMetadata{PrefillLength: 8, PrefillPageTable: table},
			ErrDType, "key is float32 but value is bfloat16"},
		{"absent key", v, tensor.Tensor{}, val, StepMetadata{PrefillLength: 8, PrefillPageTable: table}, ErrShape, "must both be present"},
		{"empty chunk", v, kvOf(t, tensor.Float32, 0, 2, 3, 0), kvOf(t, tensor.Float32, 0, 2, 3, 0),
			StepMetadata{PrefillLength: 0, PrefillPageTable: table}, ErrShape, "no tokens"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.WritePrefill(tt.k, tt.val, tt.m)
			require.ErrorIs(t, err, tt.is)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestWritePrefillOnlyPadding(t *testing.T) {
	// A chunk whose tokens are all padding (length == start) writes nothing,
	// even through a page table that could not hold it.
	v := testView(t, testMeta(2, 8, 4, 3), tensor.Float32)
	k := kvOf(t, tensor.Float32, 4, 2, 3, 1)
	got, err := v.WritePrefill(k, k, StepMetadata{PrefillLength: 4, PrefillPosition: []int32{4, 5, 6, 7}, PrefillPageTable: []int32{1}})
	require.NoError(t, err)
	assert.Equal(t, make([]float32, 2*8*4*3), got.KeyPages().Float32s())
}

// TestWriteDecodesWorkedExample is spec section 7.2's example: H=2, N=8,
// ps=4, positions [5, -1], page table rows [3, 7, 0, 0] and [0, 0, 0, 0].
// Slot 0 writes flat row 7*4+1 = 29 of head 0 and 32+29 = 61 of head 1;
// slot 1 (inactive) writes the dummy page 0 at offset 3: rows 3 and 35.
func TestWriteDecodesWorkedExample(t *testing.T) {
	const h, n, ps, d = 2, 8, 4, 2
	v := testView(t, testMeta(h, n, ps, d), tensor.Float32)
	k, val := kvOf(t, tensor.Float32, 2, h, d, 1), kvOf(t, tensor.Float32, 2, h, d, 1000)
	m := StepMetadata{DecodesPosition: []int32{5, -1}, DecodesPageTable: [][]int32{{3, 7, 0, 0}, {0, 0, 0, 0}}}
	got, err := v.WriteDecodes(k, val, m)
	require.NoError(t, err)

	want := map[int][2]int{29: {0, 0}, 3: {1, 0}, 61: {0, 1}, 35: {1, 1}} // flat row -> (slot, head)
	for name, pair := range map[string][2]tensor.Tensor{"key": {got.KeyPages(), k}, "value": {got.ValuePages(), val}} {
		flat := pair[0].Float32s()
		for r := range h * n * ps {
			if bh, ok := want[r]; ok {
				assert.Equal(t, headRow(t, pair[1], bh[0], bh[1]), flat[r*d:(r+1)*d], "%s row %d", name, r)
			} else {
				assert.Equal(t, []float32{0, 0}, flat[r*d:(r+1)*d], "%s row %d", name, r)
			}
		}
	}
}

func TestWriteDecodesFloorSemantics(t *testing.T) {
	// Position -1 reads the LAST entry of its row: with a non-zero last
	// entry the write goes there, at offset ps-1 (EasyDeL's gather).
	v := testView(t, testMeta(1, 8, 4, 2), tensor.Float32)
	k := kvOf(t, tensor.Float32, 1, 1, 2, 7)
	got, err := v.WriteDecodes(k, k, StepMetadata{DecodesPosition: []int32{-1}, DecodesPageTable: [][]int32{{1, 2, 3, 6}}})
	require.NoError(t, err)
	assert.Equal(t, []float32{7, 8}, slot(t, got.KeyPages(), 0, 6, 3))
	// Position 8 with ps 4 is logical page 2, offset 0.
	got, err = v.WriteDecodes(k, k, StepMetadata{DecodesPosition: []int32{8}, DecodesPageTable: [][]int32{{1, 2, 3, 6}}})
	require.NoError(t, err)
	assert.Equal(t, []float32{7, 8}, slot(t, got.ValuePages(), 0, 3, 0))
}

func TestWriteDecodesDuplicateTargets(t *testing.T) {
	// Slots 0, 1 and 2 all write page 0 offset 3: the last slot wins.
	v := testView(t, testMeta(2, 8, 4, 2), tensor.Float32)
	k := kvOf(t, tensor.Float32, 3, 2, 2, 1)
	m := StepMetadata{DecodesPosition: []int32{-1, 3, -1}, DecodesPageTable: [][]int32{{0, 0}, {0, 5}, {0, 0}}}
	got, err := v.WriteDecodes(k, k, m)
	require.NoError(t, err)
	for h := range 2 {
		assert.Equal(t, headRow(t, k, 2, h), slot(t, got.KeyPages(), h, 0, 3))
	}
}

func TestWriteDecodesErrors(t *testing.T) {
	v := testView(t, testMeta(2, 8, 4, 3), tensor.Float32)
	k := kvOf(t, tensor.Float32, 2, 2, 3, 1)
	rows := [][]int32{{3, 7}, {1, 2}}
	tests := []struct {
		name string
		v    View
		k    tensor.Tensor
		m    StepMetadata
		is   error
		want string
	}{
		{"absent view", View{}, k, StepMetadata{DecodesPosition: []int32{0, 0}, DecodesPageTable: rows}, ErrAbsentView, "no pages"},
		{"absent decodes", v, k, StepMetadata{PrefillPageTable: []int32{1}}, ErrStep, "decode part is absent"},
		{"position below -1", v, k, StepMetadata{DecodesPosition: []int32{0, -2}, DecodesPageTable: rows},
			ErrOutOfRange, "decodes_position[1] is -2, want >= -1"},
		{"past page table", v, k, StepMetadata{DecodesPosition: []int32{8, 0}, DecodesPageTable: rows},
			ErrOutOfRange, "decodes_position[0] is 8, which needs logical page 2, but the page table row has 2 entries (8 positions)"},
		{"page too large", v, k, StepMetadata{DecodesPosition: []int32{0, 0}, DecodesPageTable: [][]int32{{3, 7}, {8, 2}}},
			ErrOutOfRange, "page 8 at decodes_page_table[1][0] (decodes_position[1] = 0) (pool has pages 0..7)"},
		{"inactive slot reads bad last entry", v, k, StepMetadata{DecodesPosition: []int32{0, -1}, DecodesPageTable: [][]int32{{3, 7}, {1, -4}}},
			ErrOutOfRange, "page -4 at decodes_page_table[1][1]"},
		{"rows count", v, k, StepMetadata{DecodesPosition: []int32{0, 0}, DecodesPageTable: rows[:1]}, ErrStep, "1 rows for 2 decode slots"},
		{"ragged rows", v, k, StepMetadata{DecodesPosition: []int32{0, 0}, DecodesPageTable: [][]int32{{3, 7}, {1}}}, ErrStep, "row 1 has 1 entries"},
		{"key rows", v, kvOf(t, tensor.Float32, 3, 2, 3, 0), StepMetadata{DecodesPosition: []int32{0, 0}, DecodesPageTable: rows},
			ErrShape, "key has shape [3 2 3], want (2, 2, 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.WriteDecodes(tt.k, tt.k, tt.m)
			require.ErrorIs(t, err, tt.is)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

// TestVersionsAreImmutable checks that a write never changes what an older
// version wrote, including two branches written from one base and a
// rewrite behind a page's tip.
func TestVersionsAreImmutable(t *testing.T) {
	v := testView(t, testMeta(2, 8, 4, 3), tensor.BFloat16)
	table := []int32{5, 2, 0, 0}
	base, err := v.WritePrefill(kvOf(t, tensor.Float32, 6, 2, 3, 1), kvOf(t, tensor.Float32, 6, 2, 3, 50), StepMetadata{PrefillLength: 6, PrefillPageTable: table})
	require.NoError(t, err)
	baseK, baseV, err := base.Gather(table, 6)
	require.NoError(t, err)

	decode := func(from View, pos int32, val float32) View {
		x := kvOf(t, tensor.Float32, 1, 2, 3, val)
		next, err := from.WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{pos}, DecodesPageTable: [][]int32{table}})
		require.NoError(t, err)
		return next
	}
	a := decode(base, 6, -1) // appends at page 2's tip
	b := decode(base, 6, -2) // the same position from the same base
	c := decode(a, 3, -3)    // rewrites position 3 (page 5's last slot), behind its tip

	check := func(name string, x View, length int, wantK, wantV []float32) {
		k, val, err := x.Gather(table, length)
		require.NoError(t, err)
		assert.Equal(t, wantK, k.Float32s(), name+" keys")
		assert.Equal(t, wantV, val.Float32s(), name+" values")
	}
	check("base", base, 6, baseK.Float32s(), baseV.Float32s())
	tokA, tokB, tokC := kvOf(t, tensor.Float32, 1, 2, 3, -1).Float32s(), kvOf(t, tensor.Float32, 1, 2, 3, -2).Float32s(), kvOf(t, tensor.Float32, 1, 2, 3, -3).Float32s()
	check("a", a, 7, append(baseK.Float32s(), tokA...), append(baseV.Float32s(), tokA...))
	check("b", b, 7, append(baseK.Float32s(), tokB...), append(baseV.Float32s(), tokB...))
	wantC := append(baseK.Float32s(), tokA...)
	copy(wantC[3*6:4*6], tokC)
	wantCV := append(baseV.Float32s(), tokA...)
	copy(wantCV[3*6:4*6], tokC)
	check("c", c, 7, wantC, wantCV)
	check("a after c", a, 7, append(baseK.Float32s(), tokA...), append(baseV.Float32s(), tokA...))
}

// TestDecodeWriteSharesPages checks that a decode write leaves every page
// it does not write shared with the previous version: its cost does not
// depend on the pool or the context.
func TestDecodeWriteSharesPages(t *testing.T) {
	const h, n, ps, d = 2, 64, 4, 3
	v := testView(t, testMeta(h, n, ps, d), tensor.Float32)
	table := make([]int32, 0, 16)
	for p := range 16 {
		table = append(table, int32(1+p))
	}
	meta := testMeta(h, n, ps, d)
	meta.MaxSequences, meta.NumPagesPerSequence = 64, 16
	v.meta = meta
	prefill := kvOf(t, tensor.Float32, 61, h, d, 1)
	v, err := v.WritePrefill(prefill, prefill, StepMetadata{PrefillLength: 61, PrefillPageTable: table})
	require.NoError(t, err)
	x := kvOf(t, tensor.Float32, 1, h, d, 9)
	next, err := v.WriteDecodes(x, x, StepMetadata{DecodesPosition: []int32{61}, DecodesPageTable: [][]int32{table}})
	require.NoError(t, err)
	for _, pair := range [][2]tensor.Tensor{{v.KeyPages(), next.KeyPages()}, {v.ValuePages(), next.ValuePages()}} {
		for c := range h * n {
			// Appending at the sequence's tip writes in place: no page is copied.
			assert.True(t, pair[1].SharesChunk(c, pair[0], c), "head %d page %d is shared", c/n, c%n)
		}
	}
}

func TestGather(t *testing.T) {
	v := testView(t, testMeta(2, 8, 4, 3), tensor.Float32)
	k := kvOf(t, tensor.Float32, 5, 2, 3, 1)
	v, err := v.WritePrefill(k, k, StepMetadata{PrefillLength: 5, PrefillPageTable: []int32{7, 3}})
	require.NoError(t, err)
	got, _, err := v.Gather([]int32{7, 3}, 5)
	require.NoError(t, err)
	assert.True(t, got.Equal(k))
	empty, _, err := v.Gather(nil, 0)
	require.NoError(t, err)
	assert.Equal(t, []int{0, 2, 3}, empty.Shape())

	tests := []struct {
		name   string
		table  []int32
		length int
		want   string
	}{
		{"negative length", []int32{7}, -1, "gather length -1, want 0..4"},
		{"past table", []int32{7, 3}, 9, "gather length 9, want 0..8 (2 pages of 4 positions)"},
		{"bad page", []int32{7, 9}, 5, "page 9 at page table entry 1 (pool has pages 0..7)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := v.Gather(tt.table, tt.length)
			require.ErrorIs(t, err, ErrOutOfRange)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, _, err = View{}.Gather(nil, 0)
	require.ErrorIs(t, err, ErrAbsentView)
}

// seqState is the model of one sequence in TestWritesMatchModel: the
// key and value vectors (Hkv*D values) of each written position.
type seqState struct{ k, v [][]float32 }

// TestWritesMatchModel drives random prefill chunks and decode steps, from
// random earlier versions, and checks every version against a naive model
// of each sequence's tokens after every step.
func TestWritesMatchModel(t *testing.T) {
	const h, ps, d, seqs, perSeq = 2, 4, 3, 3, 4
	meta := Metadata{
		BatchSize: seqs, NumHiddenLayers: 1, NumPagesPerLayer: 1 + seqs*perSeq, NumPagesPerSequence: perSeq,
		MaxSequences: perSeq * ps, PageSize: ps, NumKVHeads: h, KVHeadDimSize: d, HBMUtilization: 0.5,
	}
	for seed := range 20 {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			rng := newRand(uint64(seed))
			v0, err := NewView(meta, tensor.BFloat16, 0)
			require.NoError(t, err)
			tables := make([][]int32, seqs)
			for s := range tables {
				for p := range perSeq { // interleave the sequences' pages
					tables[s] = append(tables[s], int32(1+p*seqs+s))
				}
			}
			type version struct {
				v     View
				state []seqState
			}
			versions := []version{{v0, make([]seqState, seqs)}}
			counter := float32(0)
			token := func() []float32 { // distinct values exact in bf16
				out := make([]float32, h*d)
				for i := range out {
					counter++
					out[i] = float32(int(counter)%250 + 1)
				}
				return out
			}
			for range 40 {
				from := versions[rng.intn(len(versions))]
				state := make([]seqState, seqs)
				copy(state, from.state)
				var next View
				if rng.intn(2) == 0 { // a prefill chunk of one sequence
					s := rng.intn(seqs)
					start := len(state[s].k)
					room := perSeq*ps - start
					if room == 0 {
						continue
					}
					real := 1 + rng.intn(room)
					pad := rng.intn(3)
					var kd, vd []float32
					positions := make([]int32, real+pad)
					st := seqState{k: append([][]float32(nil), state[s].k...), v: append([][]float32(nil), state[s].v...)}
					for i := range real + pad {
						kt, vt := token(), token()
						kd, vd = append(kd, kt...), append(vd, vt...)
						positions[i] = int32(start + i)
						if i < real {
							st.k, st.v = append(st.k, kt), append(st.v, vt)
						}
					}
					kx := tensor.Must(tensor.FromFloat32s(tensor.Float32, kd, real+pad, h, d))
					vx := tensor.Must(tensor.FromFloat32s(tensor.Float32, vd, real+pad, h, d))
					m := StepMetadata{PrefillLength: int32(start + real), PrefillPageTable: tables[s]}
					if start > 0 || rng.intn(2) == 0 {
						m.PrefillPosition = positions
					}
					next, err = from.v.WritePrefill(kx, vx, m)
					require.NoError(t, err)
					state[s] = st
				} else { // one decode token for some sequences; the others are inactive
					m := StepMetadata{DecodesPosition: make([]int32, seqs), DecodesPageTable: make([][]int32, seqs)}
					var kd, vd []float32
					for s := range seqs {
						kt, vt := token(), token()
						kd, vd = append(kd, kt...), append(vd, vt...)
						pos := len(state[s].k)
						if pos == perSeq*ps || rng.intn(3) == 0 {
							m.DecodesPosition[s], m.DecodesPageTable[s] = -1, make([]int32, perSeq)
							continue
						}
						m.DecodesPosition[s], m.DecodesPageTable[s] = int32(pos), tables[s]
						state[s] = seqState{k: append(append([][]float32(nil), state[s].k...), kt), v: append(append([][]float32(nil), state[s].v...), vt)}
					}
					kx := tensor.Must(tensor.FromFloat32s(tensor.Float32, kd, seqs, h, d))
					vx := tensor.Must(tensor.FromFloat32s(tensor.Float32, vd, seqs, h, d))
					next, err = from.v.WriteDecodes(kx, vx, m)
					require.NoError(t, err)
				}
				versions = append(versions, version{next, state})
				for vi, ver := range versions {
					for s := range seqs {
						n := len(ver.state[s].k)
						k, val, err := ver.v.Gather(tables[s], n)
						require.NoError(t, err)
						for p := range n {
							require.Equal(t, ver.state[s].k[p], row(t, k, p), "version %d seq %d key pos %d", vi, s, p)
							require.Equal(t, ver.state[s].v[p], row(t, val, p), "version %d seq %d value pos %d", vi, s, p)
						}
					}
				}
			}
		})
	}
}

// rand is a tiny deterministic generator (splitmix64) for the model tests.
type rand struct{ s uint64 }

func newRand(seed uint64) *rand { return &rand{seed} }

func (r *rand) intn(n int) int {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z % uint64(n))
}
