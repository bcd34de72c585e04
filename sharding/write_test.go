package sharding

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBlocksAndPick(t *testing.T) {
	mesh, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 4}, Devices: UniformDevices(8, 1)})
	require.NoError(t, err)
	tests := []struct {
		entry MeshAxes
		want  int
	}{
		{nil, 1},
		{MeshAxes{TP}, 4},
		{MeshAxes{DP, TP}, 8},
		{MeshAxes{FSDP, DP}, 2}, // fsdp is not in the mesh: size 1
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tc.entry.Blocks(mesh), "%s", tc.entry)
	}

	kv := Spec{{FSDP, DP}, {SP}, {TP}, nil}
	in := kv.Pick(0, -1, 2, 3)
	assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), None, 'tp', None)", in.String())
	in[0][0] = "x" // a copy: kv is unchanged
	assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), 'sp', 'tp', None)", kv.String())
	assert.Equal(t, "PartitionSpec('tp')", kv.Pick(2).String())
	assert.Panics(t, func() { kv.Pick(4) })
}

func TestSplitJoinValues(t *testing.T) {
	mesh, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 2}, Devices: UniformDevices(4, 1)})
	require.NoError(t, err)
	xs := []int32{10, 11, 12, 13}
	tests := []struct {
		name string
		spec Spec
		want [][]int32 // per device, in device order (dp major, tp minor)
	}{
		{"over dp", Spec{{DP}}, [][]int32{{10, 11}, {10, 11}, {12, 13}, {12, 13}}},
		{"over tp", Spec{{TP}}, [][]int32{{10, 11}, {12, 13}, {10, 11}, {12, 13}}},
		{"over dp and tp", Spec{{DP, TP}}, [][]int32{{10}, {11}, {12}, {13}}},
		{"replicated", Spec{nil}, [][]int32{xs, xs, xs, xs}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := SplitValues(xs, tc.spec, mesh)
			require.NoError(t, err)
			assert.Equal(t, tc.want, parts)
			parts[0][0] = 99 // parts are copies
			assert.Equal(t, int32(10), xs[0])
			parts[0][0] = tc.want[0][0]
			back, err := JoinValues(parts, tc.spec, mesh, len(xs))
			require.NoError(t, err)
			assert.Equal(t, xs, back)
		})
	}

	t.Run("errors", func(t *testing.T) {
		_, err := SplitValues([]int32{1, 2, 3}, Spec{{DP}}, mesh)
		assert.ErrorIs(t, err, ErrSpec)

		parts, err := SplitValues(xs, Spec{{DP}}, mesh)
		require.NoError(t, err)
		parts[1] = []int32{10, 7} // device 1 replicates device 0
		_, err = JoinValues(parts, Spec{{DP}}, mesh, 4)
		require.ErrorIs(t, err, ErrReplicaMismatch)
		assert.Contains(t, err.Error(), "device 0 (id 0) and its replica device 1 (id 1) differ at element 1: 11 and 7")

		parts[1] = []int32{10}
		_, err = JoinValues(parts, Spec{{DP}}, mesh, 4)
		require.ErrorIs(t, err, ErrShape)
		assert.Contains(t, err.Error(), "part 1 (device id 1) has 1 values, want 2")

		_, err = JoinValues(parts[:3], Spec{{DP}}, mesh, 4)
		assert.ErrorIs(t, err, ErrShape)
	})
}
