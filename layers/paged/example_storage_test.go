package paged_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// A page pool stored as NF4 codes with float32 absmax, one block per row
// of 4 values: each decode write quantizes its own rows, Gather
// dequantizes, and the pool stays NF4. Row 0 has absmax 1: 0.5 lies
// nearer the level 0.4407 than 0.5626. Row 1 has absmax 2: -0.6 and 1.3
// normalise to -0.3 and 0.65, nearest levels -0.2844 and 0.7230. An
// all-zero row has absmax 0 and reads back as zeros. Each pool holds 8
// rows of 2 code bytes and one 4-byte absmax: 2·8·6 = 96 bytes.
func ExampleNewViewStorage() {
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 4, NumPagesPerSequence: 2,
		MaxSequences: 4, PageSize: 2, NumKVHeads: 1, KVHeadDimSize: 4, HBMUtilization: 0.5}
	st := paged.Storage{DType: tensor.Float32, Quantization: tensor.NF4}
	v, err := paged.NewViewStorage(meta, st, 0)
	if err != nil {
		panic(err)
	}
	table := [][]int32{{3, 1}}
	for p, x := range [][]float32{{1, -1, 0.5, 0.25}, {2, 0, -0.6, 1.3}, {0, 0, 0, 0}} {
		kv := tensor.Must(tensor.FromFloat32s(tensor.Float32, x, 1, 1, 4))
		if v, err = v.WriteDecodes(kv, kv, paged.StepMetadata{DecodesPosition: []int32{int32(p)}, DecodesPageTable: table}); err != nil {
			panic(err)
		}
	}
	fmt.Println("stored:", v.KeyCodes(), v.KeyScales(), v.NumBytes(), "bytes; block", v.Storage().BlockSize, "of 4")
	keys, _, err := v.Gather(table[0], 3)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%.4f\n", keys.Float32s())
	// Output:
	// stored: uint8[1 4 2 2] float32[1 4 2 1] 96 bytes; block 64 of 4
	// [1.0000 -1.0000 0.4407 0.2461 2.0000 0.0000 -0.5689 1.4459 0.0000 0.0000 0.0000 0.0000]
}
