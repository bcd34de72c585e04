package mamba

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestNewMetadataValidation(t *testing.T) {
	ok := MetadataConfig{NumHiddenLayers: 2, BatchSize: 2, IntermediateSize: 64, SSMStateSize: 16, ConvKernelSize: 4}
	with := func(f func(c *MetadataConfig)) MetadataConfig { c := ok; f(&c); return c }
	cases := []struct {
		name string
		cfg  MetadataConfig
		want string // substring of the error; "" = valid
	}{
		{"valid", ok, ""},
		// EasyDeL's test_create_invalid vectors.
		{"batch 0", with(func(c *MetadataConfig) { c.BatchSize = 0 }), "batch_size must be positive (got 0)"},
		{"batch -1", with(func(c *MetadataConfig) { c.BatchSize = -1 }), "batch_size must be positive (got -1)"},
		{"intermediate 0", with(func(c *MetadataConfig) { c.IntermediateSize = 0 }), "intermediate_size must be positive (got 0)"},
		{"ssm -1", with(func(c *MetadataConfig) { c.SSMStateSize = -1 }), "ssm_state_size must be positive (got -1)"},
		{"conv 0", with(func(c *MetadataConfig) { c.ConvKernelSize = 0 }), "conv_kernel_size must be positive (got 0)"},
		// EasyDeL's order: batch, intermediate, ssm, conv.
		{"batch first", with(func(c *MetadataConfig) { c.BatchSize, c.ConvKernelSize, c.IntermediateSize = 0, 0, 0 }), "batch_size"},
		{"intermediate before ssm", with(func(c *MetadataConfig) { c.IntermediateSize, c.SSMStateSize = -3, 0 }), "intermediate_size must be positive (got -3)"},
		{"ssm before conv", with(func(c *MetadataConfig) { c.SSMStateSize, c.ConvKernelSize = 0, 0 }), "ssm_state_size"},
		// kvmesh's own checks, after EasyDeL's.
		{"negative layers", with(func(c *MetadataConfig) { c.NumHiddenLayers = -1 }), "num_hidden_layers must not be negative (got -1)"},
		{"layers after sizes", with(func(c *MetadataConfig) { c.NumHiddenLayers, c.ConvKernelSize = -1, 0 }), "conv_kernel_size"},
		{"zero layers", with(func(c *MetadataConfig) { c.NumHiddenLayers = 0 }), ""},
		{"bad partition axis", with(func(c *MetadataConfig) { c.PartitionAxis = json.RawMessage(`{"batch_axis":`) }), "partition_axis is not valid JSON"},
		{"partition axis", with(func(c *MetadataConfig) { c.PartitionAxis = json.RawMessage(`{"batch_axis": ["fsdp", "dp"]}`) }), ""},
	}
	for _, tc := range cases {
		testkit.NewMetadataCase(t, tc.name, tc.cfg, tc.want, NewMetadata, ErrMetadata, func(t *testing.T, m Metadata) {
			assert.Equal(t, tc.cfg.BatchSize, m.BatchSize)
			assert.Equal(t, tc.cfg.IntermediateSize, m.IntermediateSize)
			assert.Equal(t, tc.cfg.SSMStateSize, m.SSMStateSize)
			assert.Equal(t, tc.cfg.ConvKernelSize, m.ConvKernelSize)
			assert.Equal(t, tc.cfg.NumHiddenLayers, m.NumHiddenLayers)
		})
	}
}

func TestMetadataJSON(t *testing.T) {
	cases := []struct {
		name string
		axis json.RawMessage
		want string
	}{
		{"no partition axis", nil,
			`{"num_hidden_layers":2,"partition_axis":null,"batch_size":2,"intermediate_size":64,"ssm_state_size":16,"conv_kernel_size":4}`},
		{"null partition axis", json.RawMessage(" null "),
			`{"num_hidden_layers":2,"partition_axis":null,"batch_size":2,"intermediate_size":64,"ssm_state_size":16,"conv_kernel_size":4}`},
		{"partition axis is compacted", json.RawMessage(`{ "batch_axis": ["fsdp", "dp"], "head_axis": "tp" }`),
			`{"num_hidden_layers":2,"partition_axis":{"batch_axis":["fsdp","dp"],"head_axis":"tp"},"batch_size":2,"intermediate_size":64,"ssm_state_size":16,"conv_kernel_size":4}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMetadata(MetadataConfig{NumHiddenLayers: 2, PartitionAxis: tc.axis, BatchSize: 2, IntermediateSize: 64, SSMStateSize: 16, ConvKernelSize: 4})
			require.NoError(t, err)
			b, err := json.Marshal(m)
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(b))
			assert.Equal(t, tc.want, string(b), "field order is EasyDeL's")
			var back Metadata
			require.NoError(t, json.Unmarshal(b, &back))
			assert.Equal(t, m, back)
			require.NoError(t, back.Validate())
		})
	}
}

func TestMetadataJSONRejectsInvalidOnValidate(t *testing.T) {
	var m Metadata
	require.NoError(t, json.Unmarshal([]byte(`{"num_hidden_layers":1,"batch_size":0,"intermediate_size":4,"ssm_state_size":2,"conv_kernel_size":4}`), &m))
	err := m.Validate()
	require.ErrorIs(t, err, ErrMetadata)
	assert.Contains(t, err.Error(), "batch_size must be positive (got 0)")
	require.Error(t, json.Unmarshal([]byte(`{"batch_size":"two"}`), &m))
}

func TestMetadataCopiesPartitionAxis(t *testing.T) {
	axis := json.RawMessage(`{"a":1}`)
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: 1, PartitionAxis: axis, BatchSize: 1, IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2})
	require.NoError(t, err)
	v, err := NewView(m, tensor.Float32, nil)
	require.NoError(t, err)
	axis[1] = 'X'
	got := v.Metadata()
	got.PartitionAxis[1] = 'Y'
	assert.Equal(t, `{"a":1}`, string(v.Metadata().PartitionAxis))
}

func TestMetadataUnmarshalCompactsPartitionAxis(t *testing.T) {
	var m Metadata
	require.NoError(t, json.Unmarshal([]byte(`{"partition_axis": { "a" : [1, 2] }, "batch_size": 1}`), &m))
	assert.Equal(t, `{"a":[1,2]}`, string(m.PartitionAxis))
}
