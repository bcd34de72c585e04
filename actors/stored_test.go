package actors

import (
	"bytes"
	"context"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// storedTestMeta has 2 layers, 4 kv heads of dim 8 and 9 pages of 4.
func storedTestMeta() paged.Metadata {
	return paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 4, KVHeadDimSize: 8, HBMUtilization: 0.5}
}

// prefillLayers writes length random tokens into every layer of c at
// table and returns the published version.
func prefillLayers(t *testing.T, c *Cache, base uint64, table []int32, length int, seed int64) Version {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	meta := storedTestMeta()
	step(t, c, base, layerWrites(meta.NumHiddenLayers, func() *PagedWrite {
		return &PagedWrite{PrefillKey: randTensor(r, length, meta.NumKVHeads, meta.KVHeadDimSize),
			PrefillValue: randTensor(r, length, meta.NumKVHeads, meta.KVHeadDimSize),
			Step:         paged.StepMetadata{PrefillLength: int32(length), PrefillPageTable: table}}
	}))
	v, err := c.Current(context.Background())
	require.NoError(t, err)
	return v
}

// A PagedStoredWrite puts a sequence's stored rows (int8 codes and
// scales, or values) into a cache of the same storage byte for byte;
// rows of another storage, or a step with decodes, are refused.
func TestPagedStoredWrite(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	meta := storedTestMeta()
	for _, st := range []paged.Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 4},
		{DType: tensor.BFloat16},
	} {
		t.Run(st.String(), func(t *testing.T) {
			spec := Spec{Paged: &PagedSpec{Metadata: meta, DType: st.DType, Quantization: st.Quantization, BlockSize: st.BlockSize}}
			src, err := rt.NewCache("src "+st.String(), spec)
			require.NoError(t, err)
			dst, err := rt.NewCache("dst "+st.String(), spec)
			require.NoError(t, err)
			srcTable, dstTable := []int32{5, 2}, []int32{7, 3}
			sv := prefillLayers(t, src, 0, srcTable, 7, 1)

			ws := make([]LayerWrite, meta.NumHiddenLayers)
			rows := make([]paged.Stored, meta.NumHiddenLayers)
			for l := range ws {
				pv := sv.Views[l].(paged.View)
				assert.Equal(t, st, pv.Storage(), "the cache stores its pages as its spec says")
				rows[l], err = pv.GatherStored(srcTable, 7)
				require.NoError(t, err)
				ws[l] = LayerWrite{Layer: l, Write: &PagedStoredWrite{Rows: rows[l], Step: paged.StepMetadata{PrefillLength: 7, PrefillPageTable: dstTable}}}
			}
			step(t, dst, 0, ws)
			dv, err := dst.Current(ctx)
			require.NoError(t, err)
			for l := range ws {
				got, err := dv.Views[l].(paged.View).GatherStored(dstTable, 7)
				require.NoError(t, err)
				for i, pair := range [][2]tensor.Tensor{{rows[l].Key, got.Key}, {rows[l].Value, got.Value},
					{rows[l].KeyScales, got.KeyScales}, {rows[l].ValueScales, got.ValueScales}} {
					if pair[0].IsZero() {
						assert.True(t, pair[1].IsZero())
						continue
					}
					assert.True(t, bytes.Equal(pair[0].Bytes(), pair[1].Bytes()), "layer %d component %d", l, i)
				}
			}
		})
	}

	// Mismatched storage and decodes are refused; nothing is published.
	i8, err := rt.NewCache("i8", Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.BFloat16, Quantization: tensor.Int8}})
	require.NoError(t, err)
	plain, err := rt.NewCache("plain", Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.BFloat16}})
	require.NoError(t, err)
	iv := prefillLayers(t, i8, 0, []int32{1}, 3, 2)
	rows, err := iv.Views[0].(paged.View).GatherStored([]int32{1}, 3)
	require.NoError(t, err)
	w := &PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 3, PrefillPageTable: []int32{4}}}
	_, _, err = plain.Step(ctx, 0, []LayerWrite{{Layer: 0, Write: w}})
	require.ErrorIs(t, err, ErrInvalid) // across actors only the code and message travel
	assert.Contains(t, err.Error(), "storage format mismatch: write stored: rows stored as bfloat16 8BIT into a view stored as bfloat16")
	withDecodes := &PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 3, PrefillPageTable: []int32{4},
		DecodesPosition: []int32{0, -1}, DecodesPageTable: [][]int32{{5}, {0}}}}
	_, _, err = i8.Step(ctx, 1, []LayerWrite{{Layer: 0, Write: withDecodes}})
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "bad step metadata: a paged stored write has 2 decode slots")
	cur, err := plain.Current(ctx)
	require.NoError(t, err)
	assert.Zero(t, cur.Number, "a refused step publishes nothing")
}

// On a sharded (unquantized) paged cache a PagedStoredWrite is cut by kv
// heads and gives the pages a PagedWrite of the same values gives.
func TestPagedStoredWriteSharded(t *testing.T) {
	ctx := context.Background()
	rt := newRuntime(t)
	meta := storedTestMeta()
	mesh := testMesh(t, 1, 2)
	spec := Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.BFloat16}}
	src, err := rt.NewCache("src", spec)
	require.NoError(t, err)
	sv := prefillLayers(t, src, 0, []int32{1, 2}, 6, 3)
	spec.Mesh = &mesh
	viaPrefill, err := rt.NewCache("via prefill", spec)
	require.NoError(t, err)
	viaStored, err := rt.NewCache("via stored", spec)
	require.NoError(t, err)
	table := []int32{4, 6}
	var pw, sw []LayerWrite
	for l := range meta.NumHiddenLayers {
		rows, err := sv.Views[l].(paged.View).GatherStored([]int32{1, 2}, 6)
		require.NoError(t, err)
		st := paged.StepMetadata{PrefillLength: 6, PrefillPageTable: table}
		pw = append(pw, LayerWrite{Layer: l, Write: &PagedWrite{PrefillKey: rows.Key, PrefillValue: rows.Value, Step: st}})
		sw = append(sw, LayerWrite{Layer: l, Write: &PagedStoredWrite{Rows: rows, Step: st}})
	}
	step(t, viaPrefill, 0, pw)
	step(t, viaStored, 0, sw)
	a, err := viaPrefill.Current(ctx)
	require.NoError(t, err)
	b, err := viaStored.Current(ctx)
	require.NoError(t, err)
	for l := range meta.NumHiddenLayers {
		wk, wv, err := a.Views[l].(*Sharded).Gather(table, 6)
		require.NoError(t, err)
		gk, gv, err := b.Views[l].(*Sharded).Gather(table, 6)
		require.NoError(t, err)
		assert.True(t, wk.Equal(gk) && wv.Equal(gv), "layer %d", l)
	}

	layouts, err := spec.ShardedViews()
	require.NoError(t, err)
	rows, err := sv.Views[0].(paged.View).GatherStored([]int32{1, 2}, 6)
	require.NoError(t, err)
	rows.Storage = paged.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	_, err = SplitWrite(&PagedStoredWrite{Rows: rows, Step: paged.StepMetadata{PrefillLength: 6, PrefillPageTable: table}}, layouts[0])
	require.ErrorIs(t, err, paged.ErrStorageMismatch)
	assert.Contains(t, err.Error(), "rows stored as bfloat16 8BIT into a view stored as bfloat16")
}
