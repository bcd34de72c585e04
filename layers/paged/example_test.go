package paged_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Example sizes a paged cache from a memory budget, prefills one sequence
// into pages 3 and 1, decodes one token for it while slot 1 is inactive,
// and reads the sequence back.
func Example() {
	meta, err := paged.NewMetadata(paged.MetadataConfig{
		BatchSize: 2, NumHiddenLayers: 1, MaxSequences: 8, PageSize: 2, NumKVHeads: 1, KVHeadDimSize: 2,
		HBMUtilization: 0.5, DType: tensor.Float32,
		// 128 usable bytes; a page of K and V is 2 tokens x 1 head x 2 dims x 4 bytes x 2 = 32 bytes.
		Memory: paged.StaticMemory{BytesReservableLimit: 256},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("pages per layer:", meta.NumPagesPerLayer, "pages per sequence:", meta.NumPagesPerSequence)

	cache, _ := paged.Init(meta, tensor.Float32)
	v, _ := cache.View(0)
	table := []int32{3, 1, 0, 0}

	// A 4-token bucket holding a 3-token prompt: the padding is not written.
	prompt := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{1, 1, 2, 2, 3, 3, 0, 0}, 4, 1, 2))
	v, err = v.WritePrefill(prompt, prompt, paged.StepMetadata{PrefillLength: 3, PrefillPageTable: table})
	if err != nil {
		panic(err)
	}

	// Slot 0 decodes position 3; slot 1 is inactive (-1) and writes the dummy page.
	tok := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{4, 4, 9, 9}, 2, 1, 2))
	next, err := v.WriteDecodes(tok, tok, paged.StepMetadata{
		DecodesPosition:  []int32{3, -1},
		DecodesPageTable: [][]int32{table, {0, 0, 0, 0}},
	})
	if err != nil {
		panic(err)
	}
	cache, _ = cache.WithView(0, next) // publish the new version

	latest, _ := cache.View(0)
	keys, _, _ := latest.Gather(table, 4)
	fmt.Println("keys:", keys.Float32s())
	old, _, _ := v.Gather(table, 3)
	fmt.Println("the previous version still reads:", old.Float32s())
	fmt.Println("dummy page:", latest.KeyPages().At(0, 0, 1, 0))
	// Output:
	// pages per layer: 4 pages per sequence: 4
	// keys: [1 1 2 2 3 3 4 4]
	// the previous version still reads: [1 1 2 2 3 3]
	// dummy page: 9
}
