package convssm_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func Example() {
	ops := convssm.Ops{
		Shape:        errors.New("demo: bad shape"),
		DType:        errors.New("demo: bad dtype"),
		OutOfRange:   errors.New("demo: out of range"),
		Incompatible: errors.New("demo: incompatible"),
	}
	// One row, one channel, a window of K = 3 inputs.
	s, _ := ops.New(tensor.Float32, []int{1, 1, 3}, []int{1, 1, 2})
	for _, x := range []float64{1, 2, 3, 4} {
		in := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{x}, 1, 1, 1))
		s, _ = ops.RollConv(s, in, []int{convssm.Clip(10, 3)}) // decode: the last column
	}
	fmt.Println(s.Conv.Float64s())
	s, _ = ops.ResetRows(s, []int{0})
	fmt.Println(s.Conv.Float64s())
	// Output:
	// [2 3 4]
	// [0 0 0]
}
