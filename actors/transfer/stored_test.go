//go:build !race

package transfer

import (
	"bytes"
	"context"
	mrand "math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// storedMeta has 2 layers, 2 kv heads of dim 64 and 12 pages of 4.
func storedMeta() paged.Metadata {
	return paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 12, NumPagesPerSequence: 11,
		MaxSequences: 44, PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 64, HBMUtilization: 0.5}
}

// A quantized sequence (int8 codes with bfloat16 scales, and NF4) moved
// between two nodes arrives with identical codes and scales, in fewer
// bytes than its dequantized values; a receiver stored otherwise refuses
// it, naming both formats, and publishes nothing.
func TestTransferQuantizedPagedSequence(t *testing.T) {
	const length = 13 // ends mid-page
	for _, st := range []paged.Storage{
		{DType: tensor.BFloat16, Quantization: tensor.Int8},
		{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32},
	} {
		t.Run(st.String(), func(t *testing.T) {
			r := mrand.New(mrand.NewPCG(3, length))
			pre, err := actors.NewRuntime()
			require.NoError(t, err)
			defer pre.Close()
			dec, err := actors.NewRuntime()
			require.NoError(t, err)
			defer dec.Close()
			_, srcVersion, srcTable := prefillAs(t, pre, "pre", storedMeta(), st, 0, length, r)
			other, _, _ := prefillAs(t, dec, "dec", storedMeta(), st, 3, 5, r)
			plain, err := dec.NewCache("plain", actors.Spec{Paged: &actors.PagedSpec{Metadata: storedMeta(), DType: st.DType}})
			require.NoError(t, err)

			type arrival struct {
				version uint64
				table   []int32
			}
			got := make(chan arrival, 4)
			b := newNode(t, Config{Handler: func(ctx context.Context, bu Bundle) error {
				// An unquantized receiver refuses the sequence.
				if _, err := ApplyPaged(ctx, plain, 0, []int32{1, 2, 3, 4}, bu); err == nil {
					return assert.AnError
				} else if !assert.ErrorContains(t, err, "rows stored as "+st.String()+" into a view stored as "+st.DType.String()+" (") {
					return err
				}
				table, _, err := other.AllocPrefillPages(ctx, length)
				if err != nil {
					return err
				}
				cur, err := other.Current(ctx)
				if err != nil {
					return err
				}
				v, err := ApplyPaged(ctx, other, cur.Number, table, bu)
				got <- arrival{v, table}
				return err
			}})
			a := newNode(t, Config{})

			bundle, err := PagedSequence(srcVersion, srcTable, length, nil)
			require.NoError(t, err)
			assert.Equal(t, st.DType.String(), bundle.Metadata[MetaDType])
			assert.Equal(t, st.Quantization.String(), bundle.Metadata[MetaQuantization])
			require.NoError(t, a.Send(context.Background(), b.Address(), bundle))
			arr := <-got
			require.NotZero(t, arr.version)
			assert.NotEqual(t, srcTable, arr.table, "the decode cache placed the sequence on other pages")

			after, err := other.Current(context.Background())
			require.NoError(t, err)
			dequantized := 0
			for l := range storedMeta().NumHiddenLayers {
				sv, err := srcVersion.Layer(l)
				require.NoError(t, err)
				dv, err := after.Layer(l)
				require.NoError(t, err)
				want, err := sv.(paged.View).GatherStored(srcTable, length)
				require.NoError(t, err)
				have, err := dv.(paged.View).GatherStored(arr.table, length)
				require.NoError(t, err)
				assert.Equal(t, want.Storage, have.Storage)
				for i, pair := range [][2]tensor.Tensor{{want.Key, have.Key}, {want.Value, have.Value},
					{want.KeyScales, have.KeyScales}, {want.ValueScales, have.ValueScales}} {
					assert.True(t, bytes.Equal(pair[0].Bytes(), pair[1].Bytes()), "layer %d component %d differs", l, i)
				}
				k, val, err := sv.(paged.View).Gather(srcTable, length)
				require.NoError(t, err)
				dequantized += k.NumBytes() + val.NumBytes()
			}
			t.Logf("%s, %d tokens, 2 layers of 2 kv heads × 64: %d bytes sent stored, %d dequantized", st, length, bundle.NumBytes(), dequantized)
			assert.Less(t, bundle.NumBytes(), dequantized)
			cur, err := plain.Current(context.Background())
			require.NoError(t, err)
			assert.Zero(t, cur.Number, "the refusing receiver published nothing")
		})
	}
}

// recordingCache is a Cache that records the writes of its steps and
// hands them to an embedded cache, or refuses them with err.
type recordingCache struct {
	*actors.Cache
	writes [][]actors.LayerWrite
	err    error
}

func (c *recordingCache) Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (uint64, []actors.Result, error) {
	c.writes = append(c.writes, writes)
	if c.err != nil {
		return base, nil, c.err
	}
	return c.Cache.Step(ctx, base, writes)
}

// ApplyPaged takes any Cache: it steps once with one stored-rows write
// per layer (the bundle's rows and storage, a prefill of the sequence's
// length through the given page table), and a refused step is an error
// naming the cache and wrapping the refusal.
func TestApplyPagedThroughCacheInterface(t *testing.T) {
	const length = 7
	st := paged.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	r := mrand.New(mrand.NewPCG(5, length))
	rt, err := actors.NewRuntime()
	require.NoError(t, err)
	defer rt.Close()
	_, src, srcTable := prefillAs(t, rt, "src", storedMeta(), st, 0, length, r)
	bundle, err := PagedSequence(src, srcTable, length, nil)
	require.NoError(t, err)
	dst, err := rt.NewCache("dst", actors.Spec{Paged: &actors.PagedSpec{Metadata: storedMeta(), DType: st.DType, Quantization: st.Quantization}})
	require.NoError(t, err)

	rec := &recordingCache{Cache: dst}
	table := []int32{7, 2}
	v, err := ApplyPaged(context.Background(), rec, 0, table, bundle)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v)
	require.Len(t, rec.writes, 1, "one step")
	require.Len(t, rec.writes[0], storedMeta().NumHiddenLayers)
	for l, lw := range rec.writes[0] {
		assert.Equal(t, l, lw.Layer)
		w, ok := lw.Write.(*actors.PagedStoredWrite)
		require.True(t, ok, "layer %d: %T", l, lw.Write)
		assert.Equal(t, st, w.Rows.Storage)
		assert.Equal(t, paged.StepMetadata{PrefillLength: length, PrefillPageTable: table}, w.Step)
		k, _ := bundle.Tensor(KeyScalesName(l))
		assert.True(t, bytes.Equal(k.Bytes(), w.Rows.KeyScales.Bytes()), "layer %d key scales", l)
	}

	refused := &recordingCache{Cache: dst, err: actors.ErrBusy}
	_, err = ApplyPaged(context.Background(), refused, 1, table, bundle)
	require.ErrorIs(t, err, actors.ErrBusy)
	assert.ErrorContains(t, err, "apply sequence to cache dst: ")
}
