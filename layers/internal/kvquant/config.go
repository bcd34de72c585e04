package kvquant

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Config is how a cache stores its keys and values: the fields of the
// transformer and paged Storage types, which convert to it.
type Config struct {
	// DType is the cache dtype.
	DType tensor.DType
	// Quantization is tensor.None, tensor.Int8 or tensor.NF4.
	Quantization tensor.Quantization
	// BlockSize is the NF4 block; 0 means the caller's default. It is
	// ignored by the other quantizations.
	BlockSize int
}

// CheckQuantization checks that c.Quantization is known and c.BlockSize is
// not negative. The dtype is the caller's to check, in its own words;
// whether an NF4 block fits a row is NewFormat's.
func (c Config) CheckQuantization() error {
	switch c.Quantization {
	case tensor.None, tensor.Int8, tensor.NF4:
	default:
		return unknownQuantization(c.Quantization)
	}
	if c.BlockSize < 0 {
		return fmt.Errorf("block size %d must not be negative", c.BlockSize)
	}
	return nil
}

// Resolved returns c with an NF4 BlockSize of 0 replaced by defaultBlock,
// and BlockSize 0 for the other quantizations.
func (c Config) Resolved(defaultBlock int) Config {
	switch {
	case c.Quantization != tensor.NF4:
		c.BlockSize = 0
	case c.BlockSize == 0:
		c.BlockSize = defaultBlock
	}
	return c
}

// unknownQuantization is the error about a quantization method that is
// none of tensor.None, tensor.Int8 and tensor.NF4.
func unknownQuantization(q tensor.Quantization) error {
	return fmt.Errorf("unknown quantization %s (want NONE, 8BIT or NF4)", q)
}
