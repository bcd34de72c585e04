package reference

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

func full(t *testing.T, shape ...int) transformer.Mask {
	n := 1
	for _, s := range shape {
		n *= s
	}
	data := make([]bool, n)
	for i := range data {
		data[i] = true
	}
	m, err := transformer.NewMask(shape, data)
	require.NoError(t, err)
	return m
}

// With one query head per kv head and keys (1,0) and (0,1), the output is the
// softmax-weighted average of the values, which is easy to work out by hand.
func TestAttentionContiguousByHand(t *testing.T) {
	q := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{2, 0}, 1, 1, 1, 2))
	k := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 0, 0, 1, 5, 5}, 1, 3, 1, 2))
	v := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{10, 0, 0, 10, 99, 99}, 1, 3, 1, 2))
	mask, err := transformer.NewMask([]int{1, 1, 1, 3}, []bool{true, true, false})
	require.NoError(t, err)
	out, err := AttentionContiguous(q, k, v, mask, 1, tensor.Float64)
	require.NoError(t, err)
	w := math.Exp(2) / (math.Exp(2) + 1) // logits 2 and 0; key 2 is masked
	assert.InDeltaSlice(t, []float64{10 * w, 10 * (1 - w)}, out.Float64s(), 1e-12)
}

func TestAttentionGroupsQueryHeads(t *testing.T) {
	// Four query heads over two kv heads: heads 0,1 read kv head 0 and 2,3 read kv head 1.
	q := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 1, 1, 1}, 1, 1, 4, 1))
	k := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 1}, 1, 1, 2, 1))
	v := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{3, 7}, 1, 1, 2, 1))
	out, err := AttentionContiguous(q, k, v, full(t, 1, 1, 1, 1), 0, tensor.Float32)
	require.NoError(t, err)
	assert.Equal(t, tensor.Float32, out.DType())
	assert.Equal(t, []float64{3, 3, 7, 7}, out.Float64s())
}

func TestAttentionContiguousErrors(t *testing.T) {
	q := tensor.Must(tensor.New(tensor.Float64, 1, 1, 3, 2))
	k := tensor.Must(tensor.New(tensor.Float64, 1, 4, 2, 2))
	_, err := AttentionContiguous(q, k, k, full(t, 1, 1, 1, 4), 0, tensor.Float64)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "3 query heads are not a multiple of 2 kv heads")

	q = tensor.Must(tensor.New(tensor.Float64, 1, 1, 2, 2))
	_, err = AttentionContiguous(q, k, k, full(t, 1, 1, 1, 3), 0, tensor.Float64)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "mask shape [1 1 1 3], want [1 1 1 4]")

	_, err = AttentionContiguous(q, k, k, full(t, 1, 1, 1, 4), 0, tensor.BFloat16)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "precision bfloat16")
}

func TestAttentionPagedErrors(t *testing.T) {
	pages := tensor.Must(tensor.New(tensor.Float64, 1, 3, 2, 2)) // 3 pages of 2
	q := tensor.Must(tensor.New(tensor.Float64, 1, 1, 1, 2))
	in := PagedInput{Query: q, KeyPages: pages, ValuePages: pages, PageTables: [][]int32{{1, 7}}, Positions: [][]int32{{3}}}
	_, err := AttentionPaged(in, tensor.Float64)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "page table entry 1 is page 7, outside the pool of 3")

	in.Positions = [][]int32{{4}}
	_, err = AttentionPaged(in, tensor.Float64)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "position 4 outside its 2 pages of 2")

	in.Positions = [][]int32{{1}}
	in.KeyMask = [][]bool{{true}}
	_, err = AttentionPaged(in, tensor.Float64)
	require.ErrorIs(t, err, ErrInput)
	assert.Contains(t, err.Error(), "key mask has 1 entries")
}

// Paged attention reads position j through page_table[j/ps] at offset j%ps.
func TestAttentionPagedFollowsThePageTable(t *testing.T) {
	// 3 pages of 1 position, head_dim 1; the sequence's keys live in pages 2 then 1.
	kp := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{0, 0, 0}, 1, 3, 1, 1))
	vp := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{-50, 20, 10}, 1, 3, 1, 1))
	q := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 1}, 1, 2, 1, 1))
	out, err := AttentionPaged(PagedInput{Query: q, KeyPages: kp, ValuePages: vp,
		PageTables: [][]int32{{2, 1}}, Positions: [][]int32{{0, 1}}}, tensor.Float64)
	require.NoError(t, err)
	// Query 0 sees only position 0 (value 10); query 1 averages 10 and 20 (equal logits).
	assert.Equal(t, []float64{10, 15}, out.Float64s())
}
