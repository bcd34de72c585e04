package rowstore_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/rowstore"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func Example() {
	ops := rowstore.Ops{
		Shape:        errors.New("demo: bad shape"),
		OutOfRange:   errors.New("demo: out of range"),
		Incompatible: errors.New("demo: incompatible"),
	}
	src := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 2, 3, 4, 5, 6}, 3, 2))
	st, _ := ops.Fill(tensor.Float32, src, 3, 2)
	freed, _ := ops.ZeroRows(st, []int{1})
	fmt.Println(freed.Float64s(), freed.SharesChunk(0, st, 0))
	fmt.Println(ops.CheckRows([]int{3}, 3))
	// Output:
	// [1 2 0 0 5 6] true
	// demo: out of range: row 3 (batch has rows 0..2)
}
