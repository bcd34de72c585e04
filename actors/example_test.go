package actors_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// Embedding the runtime: create a contiguous cache of two layers, write one
// decode step into both, read the new version back, and see a second step
// on the same base rejected.
func Example() {
	rt, err := actors.NewRuntime()
	if err != nil {
		panic(err)
	}
	defer rt.Close()

	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 4, NumHiddenLayers: 2,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(2)})
	if err != nil {
		panic(err)
	}
	cache, err := rt.NewCache("demo", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta, DType: tensor.Float32}})
	if err != nil {
		panic(err)
	}

	// One token per row: (batch 2, 1 token, 1 head, dim 2).
	x := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{1, 2, 3, 4}, 2, 1, 1, 2))
	writes := []actors.LayerWrite{
		{Layer: 0, Write: &actors.TransformerWrite{Key: x, Value: x}},
		{Layer: 1, Write: &actors.TransformerWrite{Key: x, Value: x}},
	}
	ctx := context.Background()
	version, results, err := cache.Step(ctx, 0, writes)
	if err != nil {
		panic(err)
	}
	fmt.Println("published version", version)
	fmt.Println("layer 0's key for attention:", results[0].Key.Shape())

	current, err := cache.Current(ctx)
	if err != nil {
		panic(err)
	}
	layer, err := current.Layer(1)
	if err != nil {
		panic(err)
	}
	view := layer.(transformer.View)
	fmt.Println("layer 1 index:", view.Index(), "row 1, position 0:", view.Key().At(1, 0, 0, 0), view.Key().At(1, 0, 0, 1))

	_, _, err = cache.Step(ctx, 0, writes)
	fmt.Println("again on version 0:", errors.Is(err, actors.ErrStale))
	// Output:
	// published version 1
	// layer 0's key for attention: [2 4 1 2]
	// layer 1 index: [1 1] row 1, position 0: 3 4
	// again on version 0: true
}

// A cache sharded over a mesh of 2 data-parallel devices: each version
// holds the two devices' parts of every layer (one batch row each), and
// Version.Layer joins them.
func ExampleSpec_mesh() {
	rt, err := actors.NewRuntime()
	if err != nil {
		panic(err)
	}
	defer rt.Close()

	// eformer's batch rule is ("fsdp", "dp"): both axes must be in the mesh.
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: 2, sharding.FSDP: 1},
		Devices: sharding.UniformDevices(2, 1<<30)})
	if err != nil {
		panic(err)
	}
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: 2, SequenceLength: 4, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(2)})
	if err != nil {
		panic(err)
	}
	cache, err := rt.NewCache("sharded", actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta, DType: tensor.Float32}, Mesh: &mesh})
	if err != nil {
		panic(err)
	}
	x := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{1, 2, 3, 4}, 2, 1, 1, 2))
	ctx := context.Background()
	_, results, err := cache.Step(ctx, 0, []actors.LayerWrite{{Layer: 0, Write: &actors.TransformerWrite{Key: x, Value: x}}})
	if err != nil {
		panic(err)
	}
	fmt.Println("per-device keys:", results[0].Parts[0].Key.Shape(), results[0].Parts[1].Key.Shape())

	current, err := cache.Current(ctx)
	if err != nil {
		panic(err)
	}
	sharded := current.Views[0].(*actors.Sharded)
	for i, part := range sharded.Parts() {
		v := part.(transformer.View)
		fmt.Printf("device %d: %d row, first key %v\n", i, v.Metadata().BatchSize, v.Key().Float64s()[:2])
	}
	full, err := current.Layer(0)
	if err != nil {
		panic(err)
	}
	fmt.Println("joined index:", full.(transformer.View).Index())
	// Output:
	// per-device keys: [1 4 1 2] [1 4 1 2]
	// device 0: 1 row, first key [1 2]
	// device 1: 1 row, first key [3 4]
	// joined index: [1 1]
}
