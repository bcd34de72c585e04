package kvquant

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestCheckCut(t *testing.T) {
	tests := []struct {
		name        string
		q           tensor.Quantization
		block, w, k int
		msg         string // empty: the cut is allowed
	}{
		{"unquantized", tensor.None, 0, 8, 8, ""},
		{"int8 whole rows", tensor.Int8, 0, 8, 1, ""},
		{"int8 cut", tensor.Int8, 0, 8, 2, "int8 rows keep one scale per row of 8 values; cutting the head dim into 2 shards of 4 values"},
		{"nf4 whole blocks", tensor.NF4, 4, 16, 4, ""},
		{"nf4 straddling block", tensor.NF4, 8, 16, 4, "an nf4 block of 8 values would straddle the head-dim shards: the head dim 16 cut into 4 shards of 4 values"},
		{"nf4 block clamped to the row", tensor.NF4, 64, 8, 2, "an nf4 block of 8 values would straddle"},
		{"nf4 odd shard", tensor.NF4, 3, 6, 2, "the head dim 6 cut into 2 shards of an odd 3 values would split a byte"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := NewFormat(tensor.Float32, tc.q, tc.block, tc.w)
			require.NoError(t, err)
			err = f.CheckCut(tc.k)
			if tc.msg == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}
