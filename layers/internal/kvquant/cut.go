package kvquant

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// CheckCut checks that rows of f can be cut along the row (the head dim)
// into k shards of Width/k values each, every shard storing its part of a
// row byte for byte as the whole row stores it: the shard's codes and
// scales are then a contiguous slice of the row's, so the caches can cut
// codes and scales with the same spec as the values. k must divide Width
// (the caller's spec checks already ensure it); k <= 1 cuts nothing.
//
//   - Unquantized rows can be cut anywhere.
//   - Int8 rows cannot be cut: the scale is the absmax of the whole row,
//     which no shard can compute from its part.
//   - NF4 rows can be cut when the block divides the shard width, so that
//     no block straddles two shards, and the shard width is even, so that
//     no byte of packed codes holds codes of two shards.
func (f Format) CheckCut(k int) error {
	if k <= 1 || !f.Quantized() {
		return nil
	}
	w := f.Width / k
	switch f.Quantization {
	case tensor.Int8:
		return fmt.Errorf("int8 rows keep one scale per row of %d values; cutting the head dim into %d shards of %d values would need a scale per shard (leave the head dim whole)",
			f.Width, k, w)
	case tensor.NF4:
		if w%f.Block != 0 {
			return fmt.Errorf("an nf4 block of %d values would straddle the head-dim shards: the head dim %d cut into %d shards of %d values (want a shard width the block divides)",
				f.Block, f.Width, k, w)
		}
		if w%2 != 0 {
			return fmt.Errorf("nf4 codes are packed two per byte: the head dim %d cut into %d shards of an odd %d values would split a byte between shards",
				f.Width, k, w)
		}
	}
	return nil
}
