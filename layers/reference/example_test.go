package reference_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// Decode two tokens through a contiguous cache and attend over it.
func Example() {
	meta, _ := transformer.NewMetadata(transformer.MetadataConfig{
		BatchSize: 1, SequenceLength: 4, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(2)})
	cache, _ := transformer.Init(meta, tensor.Float32, nil)
	view, _ := cache.View(0)
	attn, _ := transformer.NewMask([]int{1, 4}, []bool{true, true, true, true}) // no padding

	for step, kv := range [][]float64{{1, 0}, {0, 1}} {
		x := tensor.Must(tensor.FromFloat64s(tensor.Float32, kv, 1, 1, 1, 2))
		k, v, mask, next, err := view.ConcatenateToCache(x, x, x, attn, transformer.ConcatOptions{})
		if err != nil {
			panic(err)
		}
		view = next
		out, _ := reference.AttentionContiguous(x, k, v, mask, 1, tensor.Float64)
		fmt.Printf("step %d: index %v out %.3f\n", step, view.Index(), out.Float64s())
	}
	// Output:
	// step 0: index [1] out [1.000 0.000]
	// step 1: index [2] out [0.269 0.731]
}
