package transfer

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// bundleStorage reads the storage metadata of a sequence bundle: none for
// an unquantized bundle, all three keys for a quantized one; anything
// else is an ErrBundle naming the key.
func TestBundleStorage(t *testing.T) {
	for _, tc := range []struct {
		name      string
		meta      map[string]string
		quantized bool
		msg       string
	}{
		{"unquantized", map[string]string{MetaLength: "3"}, false, ""},
		{"int8", map[string]string{MetaDType: "bfloat16", MetaQuantization: "8BIT", MetaBlockSize: "0"}, true, ""},
		{"nf4", map[string]string{MetaDType: "float16", MetaQuantization: "NF4", MetaBlockSize: "32"}, true, ""},
		{"partial", map[string]string{MetaDType: "bfloat16"}, false, "needs all three"},
		{"bad dtype", map[string]string{MetaDType: "int4", MetaQuantization: "8BIT", MetaBlockSize: "0"}, false, `kvmesh.dtype = "int4"`},
		{"code dtype", map[string]string{MetaDType: "int8", MetaQuantization: "8BIT", MetaBlockSize: "0"}, false, "not a supported KV dtype"},
		{"bad quantization", map[string]string{MetaDType: "bfloat16", MetaQuantization: "FP8", MetaBlockSize: "0"}, false, `kvmesh.quantization = "FP8"`},
		{"none", map[string]string{MetaDType: "bfloat16", MetaQuantization: "NONE", MetaBlockSize: "0"}, false, "is quantized (8BIT or NF4)"},
		{"bad block", map[string]string{MetaDType: "bfloat16", MetaQuantization: "NF4", MetaBlockSize: "x"}, false, `kvmesh.block_size = "x" is not a block size`},
		{"negative block", map[string]string{MetaDType: "bfloat16", MetaQuantization: "NF4", MetaBlockSize: "-4"}, false, "block size -4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, q, err := bundleStorage(tc.meta)
			if tc.msg != "" {
				require.ErrorIs(t, err, ErrBundle)
				assert.Contains(t, err.Error(), tc.msg)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.quantized, q)
			if q {
				assert.NotEqual(t, tensor.None, st.Quantization)
			}
		})
	}
}

// FuzzBundleStorage: any metadata either decodes to a valid quantized
// storage that round-trips through its metadata strings, decodes to none,
// or is an ErrBundle; it never panics.
func FuzzBundleStorage(f *testing.F) {
	f.Add("bfloat16", "8BIT", "0", true)
	f.Add("float32", "NF4", "64", true)
	f.Add("", "", "", false)
	f.Add("float16", "int8", "-1", true)
	f.Fuzz(func(t *testing.T, dt, q, bs string, present bool) {
		meta := map[string]string{}
		if present {
			meta[MetaDType], meta[MetaQuantization], meta[MetaBlockSize] = dt, q, bs
		}
		st, ok, err := bundleStorage(meta)
		if err != nil {
			if !errors.Is(err, ErrBundle) {
				t.Fatalf("error %v does not wrap ErrBundle", err)
			}
			return
		}
		if !ok {
			if present {
				t.Fatalf("present metadata %q decoded to no storage", meta)
			}
			return
		}
		if st.Validate() != nil || st.Quantization == tensor.None {
			t.Fatalf("decoded an invalid storage %+v", st)
		}
		again, ok2, err := bundleStorage(map[string]string{MetaDType: st.DType.String(), MetaQuantization: st.Quantization.String(),
			MetaBlockSize: bsString(st.BlockSize)})
		if err != nil || !ok2 || again != st {
			t.Fatalf("storage %+v does not round-trip: %+v, %v", st, again, err)
		}
	})
}

func bsString(n int) string { return strconv.Itoa(n) }

// An unquantized sequence's bundle is what it always was: a key and a
// value per layer, Gather's bytes, and no storage metadata.
func TestPagedSequenceUnquantizedBundle(t *testing.T) {
	meta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 1, NumPagesPerLayer: 6, NumPagesPerSequence: 5, MaxSequences: 20,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.5}
	v, err := paged.NewView(meta, tensor.BFloat16, 0)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(5, 6))
	table := []int32{4, 2}
	v, err = v.WritePrefill(randomTensor(r, tensor.Float32, 6, 2, 8), randomTensor(r, tensor.Float32, 6, 2, 8),
		paged.StepMetadata{PrefillLength: 6, PrefillPageTable: table})
	require.NoError(t, err)
	b, err := PagedSequence(actors.Version{Number: 1, Views: []any{v}}, table, 6, nil)
	require.NoError(t, err)
	assert.Equal(t, []string{KeyName(0), ValueName(0)}, b.Names)
	assert.Equal(t, map[string]string{MetaLength: "6", MetaLayers: "1"}, b.Metadata)
	k, val, err := v.Gather(table, 6)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(k.Bytes(), b.Tensors[0].Bytes()) && bytes.Equal(val.Bytes(), b.Tensors[1].Bytes()), "Gather's bytes")
}
