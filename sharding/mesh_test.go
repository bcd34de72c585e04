package sharding

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// mustMesh builds a mesh with uniform devices of 1 GiB, ids 0..n-1.
func mustMesh(t testing.TB, sizes map[string]int, order ...string) Mesh {
	t.Helper()
	n := 1
	for _, s := range sizes {
		n *= s
	}
	m, err := NewMesh(MeshConfig{Sizes: sizes, Order: order, Devices: UniformDevices(n, 1<<30)})
	require.NoError(t, err)
	return m
}

func TestMeshConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  MeshConfig
		want string // "" means valid
	}{
		{"ok", MeshConfig{Sizes: map[string]int{DP: 2, TP: 4}, Devices: UniformDevices(8, 1)}, ""},
		{"no axes one device", MeshConfig{Devices: UniformDevices(1, 1)}, ""},
		{"explicit order", MeshConfig{Sizes: map[string]int{DP: 2, TP: 2}, Order: []string{TP, DP}, Devices: UniformDevices(4, 1)}, ""},
		{"unknown axis", MeshConfig{Sizes: map[string]int{"mp": 2}, Devices: UniformDevices(2, 1)}, `unknown mesh axis "mp"`},
		{"zero size", MeshConfig{Sizes: map[string]int{TP: 0}, Devices: nil}, `mesh axis "tp" has size 0, want > 0`},
		{"negative size", MeshConfig{Sizes: map[string]int{DP: 2, SP: -1}, Devices: nil}, `mesh axis "sp" has size -1`},
		{"too few devices", MeshConfig{Sizes: map[string]int{DP: 2, TP: 4}, Devices: UniformDevices(7, 1)},
			"7 devices, want the product of the axis sizes (dp 2 x tp 4 = 8)"},
		{"no axes two devices", MeshConfig{Devices: UniformDevices(2, 1)}, "2 devices, want the product of the axis sizes (no axes: 1)"},
		{"order unknown axis", MeshConfig{Sizes: map[string]int{DP: 2}, Order: []string{TP}, Devices: UniformDevices(2, 1)},
			`names axis "tp", which has no size`},
		{"order repeated", MeshConfig{Sizes: map[string]int{DP: 2, TP: 1}, Order: []string{DP, DP}, Devices: UniformDevices(2, 1)},
			`names axis "dp" twice`},
		{"order missing", MeshConfig{Sizes: map[string]int{DP: 2, TP: 1}, Order: []string{DP}, Devices: UniformDevices(2, 1)},
			`lacks axis "tp"`},
		{"duplicate id", MeshConfig{Sizes: map[string]int{TP: 2}, Devices: []Device{{ID: 3}, {ID: 3}}}, "devices 0 and 1 both have id 3"},
		{"negative memory", MeshConfig{Sizes: map[string]int{TP: 2}, Devices: []Device{{ID: 0}, {ID: 1, MemoryBytes: -5}}},
			"device 1 (id 1) has negative memory -5 bytes"},
		{"too many devices", MeshConfig{Sizes: map[string]int{DP: 1 << 11, TP: 1 << 11}}, "more than 1048576 devices"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			_, err2 := NewMesh(tt.cfg)
			if tt.want == "" {
				require.NoError(t, err)
				require.NoError(t, err2)
				return
			}
			require.ErrorIs(t, err, ErrMesh)
			assert.Contains(t, err.Error(), tt.want)
			assert.ErrorIs(t, err2, ErrMesh)
		})
	}
}

func TestMeshCoordsRowMajor(t *testing.T) {
	// Default order dp, fsdp, tp, sp, ep restricted to the axes present:
	// here (dp 2, tp 3, sp 2); sp varies fastest.
	m := mustMesh(t, map[string]int{SP: 2, DP: 2, TP: 3})
	assert.Equal(t, []Axis{{DP, 2}, {TP, 3}, {SP, 2}}, m.Axes())
	assert.Equal(t, "Mesh(dp=2, tp=3, sp=2)", m.String())
	require.Equal(t, 12, m.NumDevices())
	want := [][]int{
		{0, 0, 0}, {0, 0, 1}, {0, 1, 0}, {0, 1, 1}, {0, 2, 0}, {0, 2, 1},
		{1, 0, 0}, {1, 0, 1}, {1, 1, 0}, {1, 1, 1}, {1, 2, 0}, {1, 2, 1},
	}
	for i, c := range want {
		assert.Equal(t, c, m.Coords(i), "device %d", i)
		assert.Equal(t, c[0], m.Coord(i, DP))
		assert.Equal(t, c[1], m.Coord(i, TP))
		assert.Equal(t, c[2], m.Coord(i, SP))
		assert.Equal(t, 0, m.Coord(i, EP), "absent axis")
		j, err := m.At(map[string]int{DP: c[0], TP: c[1], SP: c[2]})
		require.NoError(t, err)
		assert.Equal(t, i, j)
	}
	assert.True(t, m.Has(TP))
	assert.False(t, m.Has(FSDP))
	assert.Equal(t, 3, m.Size(TP))
	assert.Equal(t, 1, m.Size(FSDP), "an absent axis has size 1")
}

func TestMeshExplicitOrder(t *testing.T) {
	m := mustMesh(t, map[string]int{DP: 2, TP: 2}, TP, DP)
	// tp is now the slow axis: device 1 is (tp 0, dp 1).
	assert.Equal(t, 1, m.Coord(1, DP))
	assert.Equal(t, 0, m.Coord(1, TP))
	assert.Equal(t, 1, m.Coord(2, TP))
	assert.Equal(t, []string{TP, DP}, m.Config().Order)
}

func TestMeshLookupErrors(t *testing.T) {
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{TP: 2}, Devices: []Device{{ID: 10, MemoryBytes: 1}, {ID: 4, MemoryBytes: 2}}})
	require.NoError(t, err)
	i, err := m.Index(4)
	require.NoError(t, err)
	assert.Equal(t, 1, i)
	assert.Equal(t, Device{ID: 4, MemoryBytes: 2}, m.Device(1))
	_, err = m.Index(5)
	assert.ErrorIs(t, err, ErrMesh)
	assert.Contains(t, err.Error(), "no device with id 5")
	_, err = m.At(map[string]int{DP: 0})
	assert.ErrorIs(t, err, ErrMesh)
	assert.Contains(t, err.Error(), `axis "dp", which is not in the mesh`)
	_, err = m.At(map[string]int{TP: 2})
	assert.Contains(t, err.Error(), `coordinate 2 on axis "tp" of size 2`)
	assert.Panics(t, func() { m.Coords(2) })
	assert.Panics(t, func() { m.Coord(-1, TP) })
}

func TestMeshIsImmutable(t *testing.T) {
	devs := UniformDevices(2, 7)
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{TP: 2}, Devices: devs})
	require.NoError(t, err)
	devs[0].MemoryBytes = 99
	m.Devices()[1].MemoryBytes = 99
	m.Axes()[0].Size = 5
	assert.Equal(t, int64(7), m.Device(0).MemoryBytes)
	assert.Equal(t, int64(7), m.Device(1).MemoryBytes)
	assert.Equal(t, 2, m.Size(TP))
}

func TestMeshConfigJSONRoundTrip(t *testing.T) {
	m := mustMesh(t, map[string]int{DP: 2, TP: 2}, TP, DP)
	b, err := json.Marshal(m.Config())
	require.NoError(t, err)
	var c MeshConfig
	require.NoError(t, json.Unmarshal(b, &c))
	m2, err := NewMesh(c)
	require.NoError(t, err)
	assert.Equal(t, m.Config(), m2.Config())
}
