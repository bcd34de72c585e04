package lightning_test

import (
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// One head with a one-dimensional key and value and decay exp(-ln 2) = 1/2:
// the state halves at every token and adds k·v. A prefill of two tokens in
// one Update gives the same state as two single-token steps.
func Example() {
	meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(1), NumHeads: lightning.Ptr(1), HeadDim: lightning.Ptr(1)})
	if err != nil {
		panic(err)
	}
	cache, err := lightning.Init(1, meta, tensor.Float32)
	if err != nil {
		panic(err)
	}
	v, _ := cache.View(0)
	fmt.Println(v)

	slopes := []float64{math.Ln2}
	tok := func(x ...float64) tensor.Tensor {
		return tensor.Must(tensor.FromFloat64s(tensor.Float32, x, 1, 1, len(x), 1))
	}
	step := cache
	for _, kv := range [][2]float64{{2, 3}, {1, 4}, {-1, 2}} {
		if step, err = step.Update(0, tok(kv[0]), tok(kv[1]), slopes); err != nil {
			panic(err)
		}
		v, _ := step.View(0)
		fmt.Println("state", v.KeyValue().Float64s())
	}
	prefill, err := cache.Update(0, tok(2, 1), tok(3, 4), slopes)
	if err != nil {
		panic(err)
	}
	if prefill, err = prefill.Update(0, tok(-1), tok(2), slopes); err != nil {
		panic(err)
	}
	v, _ = prefill.View(0)
	fmt.Println("prefill 2 + step 1:", v.KeyValue().Float64s(), v)

	rates, _ := lightning.SlopeRates(4, 0, 2)
	fmt.Printf("slopes for 4 heads, layer 0 of 2: %.6f\n", rates)
	// Output:
	// LightningCacheView(key_value=None, layer_index=0)
	// state [6]
	// state [7]
	// state [1.5]
	// prefill 2 + step 1: [1.5] LightningCacheView(key_value=float32[1 1 1 1], layer_index=0)
	// slopes for 4 heads, layer 0 of 2: [0.250003 0.062501 0.015625 0.003906]
}
