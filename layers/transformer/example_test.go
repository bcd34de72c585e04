package transformer_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// A two-row cache: prefill a left-padded prompt, then decode one token, and
// look at the masks attention would use.
func Example() {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{
		BatchSize: 2, SequenceLength: 6, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(2),
	})
	if err != nil {
		panic(err)
	}
	cache, err := transformer.Init(meta, tensor.BFloat16, []int32{0, 1})
	if err != nil {
		panic(err)
	}
	view, _ := cache.View(0)

	// Row 1 has one pad token in front of its prompt.
	attn, _ := transformer.NewMask([]int{2, 6}, []bool{
		true, true, true, true, true, true,
		false, true, true, true, true, true,
	})
	causal := transformer.CausalMask(6)
	prompt := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{
		1, 1, 2, 2, 3, 3, // row 0, tokens 0..2
		0, 0, 4, 4, 5, 5, // row 1: pad, then tokens
	}, 2, 3, 1, 2))
	_, _, mask, view, err := view.ConcatenateToCache(prompt, prompt, prompt, attn, transformer.ConcatOptions{CausalMask: causal})
	if err != nil {
		panic(err)
	}
	fmt.Println("prefill mask:")
	fmt.Println(mask)

	next := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{6, 6, 7, 7}, 2, 1, 1, 2))
	keys, _, mask, view, err := view.ConcatenateToCache(next, next, next, attn, transformer.ConcatOptions{CausalMask: causal})
	if err != nil {
		panic(err)
	}
	fmt.Println("decode mask:")
	fmt.Println(mask)
	fmt.Println("index:", view.Index(), "starts:", view.Starts())
	fmt.Println("row 1, position 3:", keys.At(1, 3, 0, 0))
	// Output:
	// prefill mask:
	// x.....
	// xx....
	// xxx...
	//
	// ......
	// .x....
	// .xx...
	// decode mask:
	// xxxx..
	//
	// .xxx..
	// index: [4 4] starts: [0 1]
	// row 1, position 3: 7
}
