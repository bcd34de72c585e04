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
