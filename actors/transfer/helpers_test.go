package transfer

import (
	"math/rand/v2"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// randomTensor is a tensor of shape of standard normal values from r.
func randomTensor(r *rand.Rand, dt tensor.DType, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	x := make([]float64, n)
	for i := range x {
		x[i] = r.NormFloat64()
	}
	return tensor.Must(tensor.FromFloat64s(dt, x, shape...))
}
