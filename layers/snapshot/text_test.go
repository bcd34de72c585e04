package snapshot

import (
	"errors"
	"fmt"
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

// The summary lines' values start in one column for any number of views:
// column 11 (two spaces and a 9-wide label) up to 99 views, as before the
// views reached two digits, wider from view 100 on.
func TestWriteTextAlignsViews(t *testing.T) {
	for _, tc := range []struct {
		layers, column int
	}{{1, 11}, {10, 11}, {12, 11}, {100, 11}, {101, 12}} {
		t.Run(fmt.Sprintf("%d layers", tc.layers), func(t *testing.T) {
			f := describe(t, tinyTransformerCache(t, tc.layers))
			f.File = "cache.safetensors"
			lines := strings.Split(text(t, f), "\n")
			require.Equal(t, "cache.safetensors", lines[0])
			// The summary: format, views, one line per view, tensors.
			summary := lines[1 : 1+2+tc.layers+1]
			labels := []string{"format", "views"}
			for i := range tc.layers {
				labels = append(labels, fmt.Sprintf("view %d", i))
			}
			labels = append(labels, "tensors")
			var bad []string // at most 3, to keep a failure short
			for i, line := range summary {
				label := strings.TrimRight(line[:min(len(line), tc.column)], " ")
				aligned := len(line) > tc.column && label == "  "+labels[i] && len(label) < tc.column && line[tc.column] != ' '
				if !aligned && len(bad) < 3 {
					bad = append(bad, line)
				}
			}
			assert.Empty(t, bad, "lines whose label is not followed by spaces up to column %d, where the value starts", tc.column)
			last := summary[len(summary)-2]
			if (tc.layers-1)%3 == 1 {
				assert.True(t, strings.HasSuffix(last, " empty"), "line %q", last)
			} else {
				assert.Contains(t, last, fmt.Sprintf("layer %d: batch 1", tc.layers-1))
			}
			assert.True(t, strings.HasPrefix(lines[1+2+tc.layers+1], "    name "), "the tensor table follows")
		})
	}
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
