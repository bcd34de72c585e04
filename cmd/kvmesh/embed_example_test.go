package main

import (
	"context"
	"fmt"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// Embedding the runtime in a Go program: the README's example, compiled
// and run here so that it stays true. One decode step of a 32-layer
// contiguous cache, every layer written at once and published as version 1.
func Example_embedding() {
	ctx := context.Background()
	rt, err := actors.NewRuntime() // or actors.NewRuntime(actors.WithActorSystem(yourSystem))
	if err != nil {
		panic(err)
	}
	defer rt.Close()
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 8, SequenceLength: 2048,
		NumHiddenLayers: 32, NumHeads: transformer.Ptr(8), HeadDim: transformer.Ptr(128)})
	if err != nil {
		panic(err)
	}
	cache, err := rt.NewCache("chat", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta, DType: tensor.BFloat16}})
	if err != nil {
		panic(err)
	}
	k := tensor.Must(tensor.New(tensor.BFloat16, 8, 1, 8, 128)) // one token per row: (batch, tokens, kv heads, head dim)
	v := tensor.Must(tensor.New(tensor.BFloat16, 8, 1, 8, 128))
	writes := make([]actors.LayerWrite, 32) // one per layer
	for l := range writes {
		writes[l] = actors.LayerWrite{Layer: l, Write: &actors.TransformerWrite{Key: k, Value: v}}
	}
	version, results, err := cache.Step(ctx, 0, writes) // version 1, published atomically
	if err != nil {
		panic(err)
	}
	fmt.Println("version", version, "layer 0 key for attention", results[0].Key.Shape(), "mask", results[0].Mask.Shape)
	// Output:
	// version 1 layer 0 key for attention [8 2048 8 128] mask [8 1 1 2048]
}
