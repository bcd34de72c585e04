package mamba2

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestNewMetadataValidation(t *testing.T) {
	ok := MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 64, NumHeads: 4, HeadDim: 16, StateSize: 16, ConvKernelSize: 4, NGroups: 1}
	with := func(f func(c *MetadataConfig)) MetadataConfig { c := ok; f(&c); return c }
	cases := []struct {
		name string
		cfg  MetadataConfig
		want string // substring of the error; "" = valid
	}{
		{"valid (EasyDeL's test_mamba2_cache_metadata_creation)", ok, ""},
		{"batch -1", with(func(c *MetadataConfig) { c.BatchSize = -1 }), "batch_size must be positive (got -1)"},
		{"batch 0", with(func(c *MetadataConfig) { c.BatchSize = 0 }), "batch_size must be positive (got 0)"},
		{"intermediate 0", with(func(c *MetadataConfig) { c.IntermediateSize = 0 }), "intermediate_size must be positive (got 0)"},
		{"heads -1", with(func(c *MetadataConfig) { c.NumHeads = -1 }), "num_heads must be positive (got -1)"},
		{"head dim 0", with(func(c *MetadataConfig) { c.HeadDim = 0 }), "head_dim must be positive (got 0)"},
		{"state 0", with(func(c *MetadataConfig) { c.StateSize = 0 }), "state_size must be positive (got 0)"},
		{"kernel -1", with(func(c *MetadataConfig) { c.ConvKernelSize = -1 }), "conv_kernel_size must be positive (got -1)"},
		{"groups 0", with(func(c *MetadataConfig) { c.NGroups = 0 }), "n_groups must be positive (got 0)"},
		// EasyDeL's order.
		{"batch before all", with(func(c *MetadataConfig) { *c = MetadataConfig{} }), "batch_size"},
		{"intermediate before heads", with(func(c *MetadataConfig) { c.IntermediateSize, c.NumHeads = 0, 0 }), "intermediate_size"},
		{"heads before head dim", with(func(c *MetadataConfig) { c.NumHeads, c.HeadDim = 0, 0 }), "num_heads"},
		{"head dim before state", with(func(c *MetadataConfig) { c.HeadDim, c.StateSize = 0, 0 }), "head_dim"},
		{"state before kernel", with(func(c *MetadataConfig) { c.StateSize, c.ConvKernelSize = 0, 0 }), "state_size"},
		{"kernel before groups", with(func(c *MetadataConfig) { c.ConvKernelSize, c.NGroups = 0, 0 }), "conv_kernel_size"},
		// kvmesh's own checks, after EasyDeL's.
		{"negative layers", with(func(c *MetadataConfig) { c.NumHiddenLayers = -2 }), "num_hidden_layers must not be negative (got -2)"},
		{"layers after sizes", with(func(c *MetadataConfig) { c.NumHiddenLayers, c.NGroups = -1, 0 }), "n_groups"},
		{"bad partition axis", with(func(c *MetadataConfig) { c.PartitionAxis = json.RawMessage(`[`) }), "partition_axis is not valid JSON"},
		{"heads need not divide groups or match intermediate", with(func(c *MetadataConfig) { c.NumHeads, c.NGroups = 3, 2 }), ""},
	}
	for _, tc := range cases {
		testkit.NewMetadataCase(t, tc.name, tc.cfg, tc.want, NewMetadata, ErrMetadata, func(t *testing.T, m Metadata) {
			assert.Equal(t, tc.cfg.BatchSize, m.BatchSize)
			assert.Equal(t, tc.cfg.IntermediateSize, m.IntermediateSize)
			assert.Equal(t, tc.cfg.NumHeads, m.NumHeads)
			assert.Equal(t, tc.cfg.HeadDim, m.HeadDim)
			assert.Equal(t, tc.cfg.StateSize, m.StateSize)
			assert.Equal(t, tc.cfg.ConvKernelSize, m.ConvKernelSize)
			assert.Equal(t, tc.cfg.NGroups, m.NGroups)
		})
	}
}

func TestConvDim(t *testing.T) {
	// intermediate + 2 * groups * state.
	assert.Equal(t, 96, testMeta(t, easy).ConvDim())
	assert.Equal(t, 20, testMeta(t, dims{b: 1, i: 8, h: 4, p: 2, n: 3, k: 4, g: 2}).ConvDim())
}

func TestMetadataJSON(t *testing.T) {
	m, err := NewMetadata(MetadataConfig{PartitionAxis: json.RawMessage(`{"head_axis": "tp"}`), NumHiddenLayers: 2, BatchSize: 2,
		IntermediateSize: 64, NumHeads: 4, HeadDim: 16, StateSize: 16, ConvKernelSize: 4, NGroups: 1})
	require.NoError(t, err)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	const want = `{"partition_axis":{"head_axis":"tp"},"num_hidden_layers":2,"batch_size":2,"intermediate_size":64,` +
		`"num_heads":4,"head_dim":16,"state_size":16,"conv_kernel_size":4,"n_groups":1}`
	assert.Equal(t, want, string(b))
	var back Metadata
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, m, back)

	m.PartitionAxis = nil
	b, err = json.Marshal(m)
	require.NoError(t, err)
	assert.Contains(t, string(b), `"partition_axis":null`)
	assert.NotContains(t, string(b), "parition")
	back = Metadata{}
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, m, back)

	require.NoError(t, json.Unmarshal([]byte(`{"batch_size":0}`), &back))
	require.ErrorIs(t, back.Validate(), ErrMetadata)
}

func TestMetadataCopiesPartitionAxis(t *testing.T) {
	m, err := NewMetadata(MetadataConfig{PartitionAxis: json.RawMessage(`{"a":1}`), BatchSize: 1, IntermediateSize: 2,
		NumHeads: 1, HeadDim: 2, StateSize: 1, ConvKernelSize: 2, NGroups: 1})
	require.NoError(t, err)
	v, err := NewView(m, tensor.Float32, nil)
	require.NoError(t, err)
	got := v.Metadata()
	got.PartitionAxis[1] = 'Y'
	assert.Equal(t, `{"a":1}`, string(v.Metadata().PartitionAxis))
}
