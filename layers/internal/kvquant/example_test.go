package kvquant_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Two rows of four values stored as int8 codes with a float32 scale per
// row: only the rows written are quantized, and reads dequantize. Row 1 is
// [1 -2 0.5 4]: scale 4/127, codes [32 -64 16 127] (31.75 and -63.5 round
// to even), so 1 reads back as 32·4/127 = 1.0079.
func Example() {
	f, err := kvquant.NewFormat(tensor.Float32, tensor.Int8, 0, 4)
	if err != nil {
		panic(err)
	}
	s, err := kvquant.New(f, kvquant.Layout{RowsPerChunk: 1}, 3, 4)
	if err != nil {
		panic(err)
	}
	rows := tensor.Must(tensor.FromFloat32s(tensor.Float32, []float32{1, -2, 0.5, 4, 0, 0, 0, 0.25}, 2, 4))
	enc, err := f.Encode(rows)
	if err != nil {
		panic(err)
	}
	e := s.Edit()
	if err := e.WriteRows(1, &enc, 0, 1, 2); err != nil { // rows 1 and 2
		panic(err)
	}
	s = e.Store()
	fmt.Println("codes:", s.Data, "scales:", s.Scales, "bytes:", s.NumBytes())
	out := make([]float64, 12)
	if err := s.ReadRows(out, 0); err != nil {
		panic(err)
	}
	fmt.Printf("%.4f\n", out)
	// Output:
	// codes: int8[3 4] scales: float32[3 1] bytes: 24
	// [0.0000 0.0000 0.0000 0.0000 1.0079 -2.0157 0.5039 4.0000 0.0000 0.0000 0.0000 0.2500]
}
