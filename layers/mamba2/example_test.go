package mamba2_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// A prefill sets the conv window at positions 0..K-1 and counts one forward
// call; decode steps then shift in one [x | B | C] column each and count
// one call each. SeqlenOffset > 0 tells the mixer to take the decode path.
func Example() {
	meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{
		NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: 1, NumHeads: 1, HeadDim: 1,
		StateSize: 1, ConvKernelSize: 3, NGroups: 1,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("conv_dim", meta.ConvDim())
	cache, err := mamba2.Init(meta, tensor.Float64)
	if err != nil {
		panic(err)
	}
	fmt.Println("decode?", cache.SeqlenOffset() > 0)

	// Prefill of 2 tokens a, b: the window is [0, a, b] per channel.
	window := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{0, 1, 2, 0, 10, 20, 0, 100, 200}, 1, 3, 3))
	if cache, err = cache.UpdateConvStatePositions(0, window, []int32{0, 1, 2}); err != nil {
		panic(err)
	}
	if cache, err = cache.UpdateSeq(1); err != nil {
		panic(err)
	}
	// One decode step with input c.
	col := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{3, 30, 300}, 1, 3))
	if cache, err = cache.UpdateConvState(0, col, meta.ConvKernelSize-1); err != nil {
		panic(err)
	}
	if cache, err = cache.UpdateSeq(1); err != nil {
		panic(err)
	}
	v, _ := cache.View(0)
	fmt.Println("conv", v.ConvStates().Float64s())
	fmt.Println("positions", v.Positions(), "decode?", cache.SeqlenOffset() > 0)
	fmt.Println(v)
	// Output:
	// conv_dim 3
	// decode? false
	// conv [1 2 3 10 20 30 100 200 300]
	// positions [2] decode? true
	// Mamba2CacheView(conv_states=float64[1 3 3], ssm_states=float64[1 1 1 1], positions=int32[1], seqlen_offset=2, layer_index=0)
}
