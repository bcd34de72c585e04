package snapshot

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// tinyTransformerCache is the snapshot of a transformer cache of the given
// number of layers, one row of one token of one head each, every third
// layer empty.
func tinyTransformerCache(t *testing.T, layers int) []byte {
	t.Helper()
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 1, SequenceLength: 1, NumHiddenLayers: layers,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(1)})
	require.NoError(t, err)
	c, err := transformer.Init(meta, tensor.Float32, nil)
	require.NoError(t, err)
	for l := 1; l < layers; l += 3 {
		c, err = c.WithView(l, transformer.View{})
		require.NoError(t, err)
	}
	return marshal(t, c)
}

// WriteText starts with the file name only when one is set.
func TestWriteTextFileLine(t *testing.T) {
	f := describe(t, tinyTransformerCache(t, 2))
	out := text(t, f)
	assert.True(t, strings.HasPrefix(out, "  format   kvmesh.transformer.Cache/v1 (transformer cache)\n"), "no file line: %q", out)
	f.File = "dir/c.safetensors"
	assert.Equal(t, "dir/c.safetensors\n"+out, text(t, f))
}

// failWriter fails every write.
type failWriter struct{}

var errWrite = errors.New("disk full")

func (failWriter) Write([]byte) (int, error) { return 0, errWrite }

// WriteText returns the error of writing to its writer.
func TestWriteTextWriteError(t *testing.T) {
	f := describe(t, tinyTransformerCache(t, 1))
	assert.ErrorIs(t, f.WriteText(failWriter{}), errWrite)
}

// A transformer view whose values differ from its keys says so; a view
// without a layer index says that; long lists are cut at 16 values.
func TestViewDescribe(t *testing.T) {
	layer := 3
	off := 0
	rows := make([]int32, 20)
	for _, tc := range []struct {
		name, kind string
		v          View
		want       string
	}{
		{"values differ", "transformer", View{LayerIndex: &layer, DType: "float32", BatchSize: 1, SequenceLength: 4, KVHeads: 2, HeadDim: 8,
			ValueHeads: 2, ValueDim: 4, Quantization: "none", Index: []int32{1}, Starts: []int32{0}},
			"layer 3: batch 1, sequence length 4, 2 kv heads, head dim 8 (values: 2 heads, dim 4), float32; index [1], starts [0]"},
		{"nf4 block", "paged", View{LayerIndex: &layer, DType: "bfloat16", BatchSize: 2, Pages: 5, PageSize: 4, PagesPerSequence: 2,
			MaxSequenceLength: 8, KVHeads: 1, HeadDim: 4, Quantization: "nf4", BlockSize: 2},
			"layer 3: 5 pages of 4 tokens (page 0 the dummy), 1 kv heads, head dim 4, bfloat16 stored nf4 (block 2); batch 2, 2 pages per sequence (8 tokens)"},
		{"no layer index, long list", "mamba2", View{DType: "float32", BatchSize: 20, ConvStateShape: []int{20, 4, 2},
			SSMStateShape: []int{20, 1, 2, 2}, Positions: rows, SeqlenOffset: &off},
			"no layer index: batch 20, float32, conv state [20 4 2], ssm state [20 1 2 2], positions [0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 ...] (20 rows), seqlen offset 0"},
		{"lightning unset", "lightning", View{LayerIndex: &layer, DType: "float32"},
			"layer 3: batch unset, unset heads, float32, key_value not written yet"},
		{"empty", "paged", View{Position: 2, Empty: true}, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.v.describe(tc.kind))
		})
	}
}
