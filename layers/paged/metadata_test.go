package paged

import (
	"encoding/json"
	"errors"
	"math"
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// workedExample is the configuration of spec section 7.1's worked example.
func workedExample() MetadataConfig {
	return MetadataConfig{
		BatchSize: 8, NumHiddenLayers: 32, MaxSequences: 8192, PageSize: 128,
		NumKVHeads: 8, KVHeadDimSize: 128, HBMUtilization: 0.6, DType: tensor.BFloat16, HeadShards: 4,
		Memory: StaticMemory{BytesReservableLimit: 17179869184, BytesInUse: 8589934592},
	}
}

func TestNewMetadataWorkedExample(t *testing.T) {
	m, err := NewMetadata(workedExample())
	require.NoError(t, err)
	assert.Equal(t, Metadata{
		BatchSize: 8, NumHiddenLayers: 32, NumPagesPerLayer: 409, NumPagesPerSequence: 64,
		MaxSequences: 8192, PageSize: 128, NumKVHeads: 8, KVHeadDimSize: 128, HBMUtilization: 0.6,
	}, m)
	require.NoError(t, m.Validate())
}

func TestMetadataConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*MetadataConfig)
		want string
	}{
		{"batch_size", func(c *MetadataConfig) { c.BatchSize = 0 }, "`batch_size` must be positive, got 0"},
		{"batch_size first", func(c *MetadataConfig) { c.BatchSize = -1; c.PageSize = 0 }, "`batch_size` must be positive, got -1"},
		{"num_hidden_layers", func(c *MetadataConfig) { c.NumHiddenLayers = 0; c.MaxSequences = 0 }, "`num_hidden_layers` must be positive"},
		{"max_sequences", func(c *MetadataConfig) { c.MaxSequences = -5; c.PageSize = 0 }, "`max_sequences` must be positive, got -5"},
		{"page_size", func(c *MetadataConfig) { c.PageSize = 0; c.NumKVHeads = 0 }, "`page_size` must be positive"},
		{"num_kv_heads", func(c *MetadataConfig) { c.NumKVHeads = 0; c.KVHeadDimSize = 0 }, "`num_kv_heads` must be positive"},
		{"kv_head_dim_size", func(c *MetadataConfig) { c.KVHeadDimSize = 0; c.HBMUtilization = 2 }, "`kv_head_dim_size` must be positive"},
		{"hbm zero", func(c *MetadataConfig) { c.HBMUtilization = 0 }, "`hbm_utilization` must be positive float value in range 0~1, got 0"},
		{"hbm one", func(c *MetadataConfig) { c.HBMUtilization = 1 }, "`hbm_utilization` must be positive float value in range 0~1, got 1"},
		{"hbm negative", func(c *MetadataConfig) { c.HBMUtilization = -0.5 }, "range 0~1, got -0.5"},
		{"hbm NaN", func(c *MetadataConfig) { c.HBMUtilization = math.NaN() }, "range 0~1, got NaN"},
		{"hbm before memory", func(c *MetadataConfig) { c.HBMUtilization = 1.5; c.Memory = nil }, "range 0~1, got 1.5"},
		{"memory", func(c *MetadataConfig) { c.Memory = nil; c.DType = 0 }, "no memory source"},
		{"dtype", func(c *MetadataConfig) { c.DType = 9 }, "dtype 9 is not a supported KV dtype"},
		{"head shards", func(c *MetadataConfig) { c.HeadShards = -2 }, "head shards -2 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := workedExample()
			tt.edit(&c)
			err := c.Validate()
			require.ErrorIs(t, err, ErrInvalidMetadata)
			assert.Contains(t, err.Error(), tt.want)
			_, err = NewMetadata(c)
			require.ErrorIs(t, err, ErrInvalidMetadata)
		})
	}
	require.NoError(t, workedExample().Validate())
}

type failingMemory struct{}

var errNoStats = errors.New("memory_stats unavailable")

func (failingMemory) MemoryStats() (MemoryStats, error) { return MemoryStats{}, errNoStats }

// smallConfig has Hkv=8, D=4, float32, ps=4, L=1: per_kv = 8*4*4*2 = 256
// bytes, a page of one layer = 1024 bytes.
func smallConfig(limit, used int64, util float64, shards int) MetadataConfig {
	return MetadataConfig{
		BatchSize: 2, NumHiddenLayers: 1, MaxSequences: 10, PageSize: 4, NumKVHeads: 8, KVHeadDimSize: 4,
		HBMUtilization: util, DType: tensor.Float32, HeadShards: shards,
		Memory: StaticMemory{BytesReservableLimit: limit, BytesInUse: used},
	}
}

func TestNewMetadataBudget(t *testing.T) {
	tests := []struct {
		name      string
		cfg       MetadataConfig
		wantPages int
	}{
		// int(10000*0.5) = 5000; 5000 // 1024 = 4.
		{"one shard", smallConfig(10000, 0, 0.5, 1), 4},
		{"zero shards mean one", smallConfig(10000, 0, 0.5, 0), 4},
		// 5000 * 2 = 10000; 10000 // 1024 = 9.
		{"two shards", smallConfig(10000, 0, 0.5, 2), 9},
		// 8 % 3 != 0: back to one shard.
		{"three shards do not divide 8 heads", smallConfig(10000, 0, 0.5, 3), 4},
		// int(10001*0.5) = int(5000.5) = 5000; 5000 - 2952 = 2048 = 2 pages exactly.
		{"truncation and in-use", smallConfig(10001, 2952, 0.5, 1), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMetadata(tt.cfg)
			require.NoError(t, err)
			assert.Equal(t, tt.wantPages, m.NumPagesPerLayer)
			assert.Equal(t, 3, m.NumPagesPerSequence) // ceil(10/4)
		})
	}
}

func TestNewMetadataBudgetErrors(t *testing.T) {
	tests := []struct {
		name  string
		cfg   MetadataConfig
		is    error
		wants []string
	}{
		{"negative usable", smallConfig(1000, 600, 0.5, 1), ErrBudget,
			[]string{"int(1000 * 0.5) - 600 in use = -100 bytes"}},
		// 5000 - 2953 = 2047 bytes: 1 page; 2 pages need 2048.
		{"one page", smallConfig(10001, 2953, 0.5, 1), ErrBudget,
			[]string{"2047 usable bytes per device", "give 1 pages per layer", "2048 usable bytes per device"}},
		// 2 shards: 1023*2 = 2046 bytes, 1 page; 2048 over 2 shards = 1024 per device.
		{"one page over two shards", smallConfig(10000, 5000-1023, 0.5, 2), ErrBudget,
			[]string{"1023 usable bytes per device", "x 2 head shards", "1024 usable bytes per device"}},
		{"negative limit", smallConfig(-1, 0, 0.5, 1), ErrMemory, []string{"reservable limit -1"}},
		{"too many pages", smallConfig(math.MaxInt64, 0, 0.9, 1), ErrInvalidMetadata, []string{"int32 page-index range"}},
		{"overflowing shards", smallConfig(math.MaxInt64, 0, 0.9, 8), ErrInvalidMetadata, []string{"int32 page-index range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewMetadata(tt.cfg)
			require.ErrorIs(t, err, tt.is)
			for _, w := range tt.wants {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
	t.Run("memory source error", func(t *testing.T) {
		c := smallConfig(0, 0, 0.5, 1)
		c.Memory = failingMemory{}
		_, err := NewMetadata(c)
		require.ErrorIs(t, err, ErrMemory)
		require.ErrorIs(t, err, errNoStats)
	})
	t.Run("huge page", func(t *testing.T) {
		c := smallConfig(10000, 0, 0.5, 1)
		c.PageSize, c.NumKVHeads, c.KVHeadDimSize = 1<<30, 1<<20, 1<<20
		_, err := NewMetadata(c)
		require.ErrorIs(t, err, ErrInvalidMetadata)
	})
}

func TestMetadataJSON(t *testing.T) {
	m, err := NewMetadata(workedExample())
	require.NoError(t, err)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	assert.JSONEq(t, `{"batch_size":8,"num_hidden_layers":32,"num_pages_per_layer":409,"num_pages_per_sequence":64,
		"max_sequences":8192,"page_size":128,"num_kv_heads":8,"kv_head_dim_size":128,"hbm_utilization":0.6}`, string(b))
	var back Metadata
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, m, back)

	m.HBMUtilization = 0.1 + 0.2 // not a short decimal: must still round-trip exactly
	b, err = json.Marshal(m)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, m, back)
}

func TestMetadataValidate(t *testing.T) {
	good := testMeta(2, 8, 4, 3)
	require.NoError(t, good.Validate())
	tests := []struct {
		name string
		edit func(*Metadata)
		want string
	}{
		{"pages per layer", func(m *Metadata) { m.NumPagesPerLayer = 0 }, "`num_pages_per_layer` must be positive"},
		{"only the dummy page", func(m *Metadata) { m.NumPagesPerLayer = 1 }, "`num_pages_per_layer` is 1, want 2.."},
		{"page index range", func(m *Metadata) { m.NumPagesPerLayer = math.MaxInt32 + 1 }, "want 2..2147483647"},
		{"pages per sequence", func(m *Metadata) { m.NumPagesPerSequence = 5 }, "`num_pages_per_sequence` is 5, want ceil(max_sequences 16 / page_size 4) = 4"},
		{"utilization", func(m *Metadata) { m.HBMUtilization = 1 }, "`hbm_utilization` must be positive"},
		{"heads", func(m *Metadata) { m.NumKVHeads = -1 }, "`num_kv_heads` must be positive, got -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.edit(&m)
			err := m.Validate()
			require.ErrorIs(t, err, ErrInvalidMetadata)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestFloorDivMod(t *testing.T) {
	tests := []struct{ a, b, q, r int }{
		{5, 4, 1, 1}, {-1, 4, -1, 3}, {-4, 4, -1, 0}, {-5, 4, -2, 3}, {0, 4, 0, 0}, {7, 1, 7, 0}, {-1, 1, -1, 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.q, floorDiv(tt.a, tt.b), "floorDiv(%d, %d)", tt.a, tt.b)
		assert.Equal(t, tt.r, floorMod(tt.a, tt.b), "floorMod(%d, %d)", tt.a, tt.b)
	}
}
