package mamba_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// A token-by-token decode: each step writes the new input at position K-1,
// so the conv window holds the last K inputs (oldest first); the SSM state
// is replaced after the scan. Older versions keep their values.
func Example() {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{
		NumHiddenLayers: 2, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 1, ConvKernelSize: 3,
	})
	if err != nil {
		panic(err)
	}
	cache, err := mamba.Init(meta, tensor.Float32)
	if err != nil {
		panic(err)
	}
	start := cache
	for step := 1; step <= 4; step++ {
		x := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{float64(step), float64(10 * step)}, 1, 2))
		if cache, err = cache.UpdateConvState(0, x, meta.ConvKernelSize-1); err != nil {
			panic(err)
		}
		h := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{0.5 * float64(step), -float64(step)}, 1, 2, 1))
		if cache, err = cache.UpdateSSMState(0, h); err != nil {
			panic(err)
		}
		v, _ := cache.View(0)
		fmt.Println("step", step, "conv", v.ConvStates().Float64s(), "ssm", v.SSMStates().Float64s())
	}
	v, _ := start.View(0)
	fmt.Println("start", v.ConvStates().Float64s())
	fmt.Println(cache)

	_, err = mamba.InitEmpty(1).UpdateSSMState(0, tensor.Tensor{})
	fmt.Println(errors.Is(err, mamba.ErrEmpty), err)
	// Output:
	// step 1 conv [0 0 1 0 0 10] ssm [0.5 -1]
	// step 2 conv [0 1 2 0 10 20] ssm [1 -2]
	// step 3 conv [1 2 3 10 20 30] ssm [1.5 -3]
	// step 4 conv [2 3 4 20 30 40] ssm [2 -4]
	// start [0 0 0 0 0 0]
	// MambaCache(views=[MambaCacheView(conv_states=float32[1 2 3], ssm_states=float32[1 2 1], layer_index=0), MambaCacheView(conv_states=float32[1 2 3], ssm_states=float32[1 2 1], layer_index=1)])
	// true mamba: empty view: Cache view for layer 0 is None
}
