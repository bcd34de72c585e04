package tensor_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// A cache keeps its values in chunks and derives each new version with an
// Editor. Appending at the tip writes in place; two versions that append
// from the same base never see each other's data.
func Example() {
	cache := tensor.Must(tensor.NewChunked(tensor.BFloat16, 4, 2, 4)) // 2 rows of 4, a chunk per row
	tok := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1.5, 2.25, -3}, 3))

	e := cache.Edit()
	_ = e.Write(0, tok, 0, 1) // row 0, position 0
	v1 := e.Tensor()

	e = v1.Edit()
	_ = e.Write(1, tok, 1, 1) // row 0, position 1: appended in place
	v2 := e.Tensor()

	e = v1.Edit()
	_ = e.Write(1, tok, 2, 1) // the same position from the same base: copies the chunk
	v3 := e.Tensor()

	fmt.Println(v1.At(0, 0), v2.At(0, 0), v2.At(0, 1), v3.At(0, 0), v3.At(0, 1))
	fmt.Println(v2.SharesChunk(0, v1, 0), v3.SharesChunk(0, v1, 0))

	q, _ := tensor.QuantizeInt8(tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1.27, -0.635}, 1, 2)))
	fmt.Println(q.Codes, q.Dequantize().Float64s())
	// Output:
	// 1.5 1.5 2.25 1.5 -3
	// true false
	// [127 -64] [1.27 -0.64]
}
