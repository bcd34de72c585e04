package sharding

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShardSlicesByHand checks slices worked out by hand on a dp=2, tp=2
// mesh (device i sits at dp = i/2, tp = i%2).
func TestShardSlicesByHand(t *testing.T) {
	m := mustMesh(t, map[string]int{DP: 2, TP: 2})
	type want struct {
		ranges                  []Range
		shard, replica, primary int
	}
	tests := []struct {
		name  string
		shape []int
		spec  Spec
		want  []want
	}{
		{"dp x tp grid", []int{4, 8}, Spec{{DP}, {TP}}, []want{
			{[]Range{{0, 2}, {0, 4}}, 0, 0, 0},
			{[]Range{{0, 2}, {4, 8}}, 1, 0, 1},
			{[]Range{{2, 4}, {0, 4}}, 2, 0, 2},
			{[]Range{{2, 4}, {4, 8}}, 3, 0, 3},
		}},
		{"tp only, replicated over dp", []int{4, 3}, Spec{{TP}, nil}, []want{
			{[]Range{{0, 2}, {0, 3}}, 0, 0, 0},
			{[]Range{{2, 4}, {0, 3}}, 1, 0, 1},
			{[]Range{{0, 2}, {0, 3}}, 0, 1, 0},
			{[]Range{{2, 4}, {0, 3}}, 1, 1, 1},
		}},
		{"tp major in a two-axis entry", []int{8}, Spec{{TP, DP}}, []want{
			{[]Range{{0, 2}}, 0, 0, 0},
			{[]Range{{4, 6}}, 2, 0, 1},
			{[]Range{{2, 4}}, 1, 0, 2},
			{[]Range{{6, 8}}, 3, 0, 3},
		}},
		{"fully replicated", []int{3}, Spec{nil}, []want{
			{[]Range{{0, 3}}, 0, 0, 0},
			{[]Range{{0, 3}}, 0, 1, 0},
			{[]Range{{0, 3}}, 0, 2, 0},
			{[]Range{{0, 3}}, 0, 3, 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ShardSlices(tt.shape, tt.spec, m)
			require.NoError(t, err)
			require.Len(t, got, len(tt.want))
			for i, w := range tt.want {
				assert.Equal(t, i, got[i].Index)
				assert.Equal(t, m.Device(i), got[i].Device)
				assert.Equal(t, w.ranges, got[i].Ranges, "device %d", i)
				assert.Equal(t, w.shard, got[i].Shard, "device %d shard", i)
				assert.Equal(t, w.replica, got[i].Replica, "device %d replica", i)
				assert.Equal(t, w.primary, got[i].Primary, "device %d primary", i)
			}
		})
	}
}

func TestShardSlicesReplicaOrderFollowsMesh(t *testing.T) {
	// dp=2, tp=2, sp=2 with only sp used: replicas number (dp, tp) in
	// device order, and device ids need not be indices.
	devs := []Device{{ID: 70}, {ID: 71}, {ID: 72}, {ID: 73}, {ID: 74}, {ID: 75}, {ID: 76}, {ID: 77}}
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 2, SP: 2}, Devices: devs})
	require.NoError(t, err)
	got, err := ShardSlices([]int{6}, Spec{{SP}}, m)
	require.NoError(t, err)
	for i, s := range got {
		assert.Equal(t, 70+i, s.Device.ID)
		assert.Equal(t, i%2, s.Shard, "device %d", i)
		assert.Equal(t, i/2, s.Replica, "device %d", i)
		assert.Equal(t, i%2, s.Primary, "device %d", i)
		assert.Equal(t, []Range{{3 * (i % 2), 3 * (i%2 + 1)}}, s.Ranges)
	}
}

func TestSliceShapeLenIntersect(t *testing.T) {
	s := Slice{Ranges: []Range{{2, 4}, {4, 8}, {0, 3}}}
	assert.Equal(t, []int{2, 4, 3}, s.Shape())
	assert.Equal(t, 24, s.Len())
	assert.Equal(t, "[2, 4)", s.Ranges[0].String())

	tests := []struct {
		name          string
		box           []Range
		global, local []Range
		ok            bool
	}{
		{"inside", []Range{{3, 4}, {5, 6}, {0, 3}}, []Range{{3, 4}, {5, 6}, {0, 3}}, []Range{{1, 2}, {1, 2}, {0, 3}}, true},
		{"clipped", []Range{{0, 10}, {6, 12}, {1, 2}}, []Range{{2, 4}, {6, 8}, {1, 2}}, []Range{{0, 2}, {2, 4}, {1, 2}}, true},
		{"disjoint", []Range{{0, 2}, {4, 8}, {0, 3}}, nil, nil, false},
		{"touching end", []Range{{4, 5}, {4, 8}, {0, 3}}, nil, nil, false},
		{"empty box", []Range{{3, 3}, {4, 8}, {0, 3}}, nil, nil, false},
		{"wrong rank", []Range{{0, 9}}, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, l, ok := s.Intersect(tt.box)
			assert.Equal(t, tt.ok, ok)
			assert.Equal(t, tt.global, g)
			assert.Equal(t, tt.local, l)
		})
	}
}
