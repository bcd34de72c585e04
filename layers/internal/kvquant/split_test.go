package kvquant

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// SplitStore cuts data and scales alike (rows stay whole), leaves scales
// nil for an unquantized store, and names the part a cut fails on.
func TestSplitStore(t *testing.T) {
	mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.TP: 2}, Devices: sharding.UniformDevices(2, 1)})
	require.NoError(t, err)
	byHeads := sharding.Spec{sharding.MeshAxes{sharding.TP}, nil, nil} // (heads, rows, width)
	for _, q := range []tensor.Quantization{tensor.None, tensor.Int8} {
		f, err := NewFormat(tensor.Float32, q, 0, 4)
		require.NoError(t, err)
		s, err := New(f, Layout{RowsPerChunk: 3}, 2, 3, 4)
		require.NoError(t, err)
		data, scales, err := SplitStore(s, "key", "key scales", byHeads, mesh)
		require.NoError(t, err, "%v", q)
		require.Len(t, data, 2)
		assert.Equal(t, []int{1, 3, f.DataPerRow()}, data[1].Shape(), "%v", q)
		if q == tensor.None {
			assert.Nil(t, scales)
			continue
		}
		require.Len(t, scales, 2)
		assert.Equal(t, []int{1, 3, 1}, scales[1].Shape())
	}
	f, err := NewFormat(tensor.Float32, tensor.None, 0, 4)
	require.NoError(t, err)
	odd, err := New(f, Layout{RowsPerChunk: 3}, 3, 3, 4) // 3 heads over tp 2
	require.NoError(t, err)
	_, _, err = SplitStore(odd, "value pages", "value scales", byHeads, mesh)
	require.Error(t, err)
	assert.Regexp(t, `^value pages: `, err.Error())
}
