package kvquant

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestConfigCheckQuantization(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		err  string // the whole message, "" for none
	}{
		{"none", Config{DType: tensor.Float32}, ""},
		{"int8", Config{DType: tensor.BFloat16, Quantization: tensor.Int8}, ""},
		{"nf4 default block", Config{DType: tensor.Float16, Quantization: tensor.NF4}, ""},
		{"nf4 block 32", Config{DType: tensor.Float16, Quantization: tensor.NF4, BlockSize: 32}, ""},
		{"dtype is not checked", Config{DType: tensor.I8, Quantization: tensor.Int8}, ""},
		{"unknown", Config{DType: tensor.Float32, Quantization: tensor.Quantization(5)}, "unknown quantization Quantization(5) (want NONE, 8BIT or NF4)"},
		{"negative nf4 block", Config{DType: tensor.Float32, Quantization: tensor.NF4, BlockSize: -4}, "block size -4 must not be negative"},
		{"negative block of another quantization", Config{DType: tensor.Float32, BlockSize: -1}, "block size -1 must not be negative"},
		{"unknown before the block", Config{Quantization: tensor.Quantization(9), BlockSize: -1}, "unknown quantization Quantization(9) (want NONE, 8BIT or NF4)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.CheckQuantization()
			if tc.err == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tc.err)
		})
	}
	// NewFormat words an unknown method the same way.
	_, err := NewFormat(tensor.Float32, tensor.Quantization(5), 0, 8)
	assert.EqualError(t, err, "unknown quantization Quantization(5) (want NONE, 8BIT or NF4)")
}

func TestConfigResolved(t *testing.T) {
	for _, tc := range []struct {
		name      string
		q         tensor.Quantization
		block     int
		wantBlock int
	}{
		{"nf4 default", tensor.NF4, 0, 48},
		{"nf4 explicit block kept", tensor.NF4, 16, 16},
		{"int8 block dropped", tensor.Int8, 64, 0},
		{"none block dropped", tensor.None, 7, 0},
		{"none without block", tensor.None, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{DType: tensor.BFloat16, Quantization: tc.q, BlockSize: tc.block}
			assert.Equal(t, Config{DType: tensor.BFloat16, Quantization: tc.q, BlockSize: tc.wantBlock}, c.Resolved(48))
		})
	}
}
