package kvquant

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// SplitStore cuts a store's data and, when quantized, its scales by the
// same spec over mesh (the spec of the values the store holds: whole rows
// stay on one device, which Format.CheckCut checks), and returns one of
// each per device in device order; scales is nil for an unquantized store.
// An error begins with the part's name: dataName or scalesName.
func SplitStore(s Store, dataName, scalesName string, spec sharding.Spec, mesh sharding.Mesh) (data, scales []tensor.Tensor, err error) {
	if data, err = sharding.Split(s.Data, spec, mesh); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dataName, err)
	}
	if s.Scales.IsZero() {
		return data, nil, nil
	}
	if scales, err = sharding.Split(s.Scales, spec, mesh); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", scalesName, err)
	}
	return data, scales, nil
}

// StorageName describes a storage as the caches print it: "bfloat16"
// (unquantized), "bfloat16 8BIT" (int8 codes, bfloat16 scales) or
// "float32 NF4/64" (NF4 codes, float32 absmax per block of 64).
func StorageName(dt tensor.DType, q tensor.Quantization, block int) string {
	switch q {
	case tensor.None:
		return dt.String()
	case tensor.NF4:
		return fmt.Sprintf("%s NF4/%d", dt, block)
	}
	return fmt.Sprintf("%s %s", dt, q)
}
