package transformer_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// An int8 cache with bfloat16 scales: writes quantize their rows, reads
// dequantize, and the stored form stays int8 across writes. Position 0 is
// [1 -2 0.5 4]: scale bf16(4/127) = 0.031494140625, codes [32 -64 16 127]
// (stored as bytes: -64 is 192). Position 1's -0.125 comes back as
// -64·bf16(0.25/127) = -0.1259765625: x/scale = -63.504 rounds to -63.5 in
// bfloat16 first, then to the even code -64, as EasyDeL's bf16 arithmetic
// does.
func ExampleNewViewStorage() {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{
		BatchSize: 1, SequenceLength: 4, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(1), HeadDim: transformer.Ptr(4),
	})
	if err != nil {
		panic(err)
	}
	st := transformer.Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}
	view, err := transformer.NewViewStorage(meta, st, nil, nil)
	if err != nil {
		panic(err)
	}
	for _, x := range [][]float32{{1, -2, 0.5, 4}, {0.25, 0, 0, -0.125}} {
		kv := tensor.Must(tensor.FromFloat32s(tensor.Float32, x, 1, 1, 1, 4))
		if view, err = view.Append(kv, kv); err != nil {
			panic(err)
		}
	}
	fmt.Println("stored:", view.KeyCodes(), view.KeyScales(), view.NumBytes(), "bytes")
	fmt.Println("codes of position 0:", view.KeyCodes().Bytes()[:4])
	k := view.Key()
	fmt.Println("read:", k.At(0, 0, 0, 0), k.At(0, 0, 0, 3), k.At(0, 1, 0, 3))
	// Output:
	// stored: int8[1 4 1 4] bfloat16[1 4 1 1] 48 bytes
	// codes of position 0: [32 192 16 127]
	// read: 1.0078125 4 -0.1259765625
}
