package lightning

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestNewMetadataValidation(t *testing.T) {
	cases := []struct {
		name  string
		cfg   MetadataConfig
		want  string // substring of the error; "" = valid
		shape [4]int // resolved StateShape when valid
	}{
		{"all None (EasyDeL's defaults)", MetadataConfig{}, "", [4]int{}},
		{"num_heads and head_dim", MetadataConfig{BatchSize: Ptr(2), NumHeads: Ptr(4), HeadDim: Ptr(8)}, "", [4]int{2, 4, 8, 8}},
		{"explicit dims win", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(8), KeyDim: Ptr(16)}, "", [4]int{0, 4, 16, 8}},
		{"key and value heads", MetadataConfig{KeyHeads: Ptr(2), ValueHeads: Ptr(2), KeyDim: Ptr(3), ValueDim: Ptr(5)}, "", [4]int{0, 2, 3, 5}},
		{"key heads win over num heads", MetadataConfig{NumHeads: Ptr(8), KeyHeads: Ptr(2), ValueHeads: Ptr(2)}, "", [4]int{0, 2, 0, 0}},
		{"batch 0", MetadataConfig{BatchSize: Ptr(0)}, "batch_size must be positive (got 0)", [4]int{}},
		{"heads -1", MetadataConfig{NumHeads: Ptr(-1)}, "num_heads must be positive (got -1)", [4]int{}},
		{"head dim 0", MetadataConfig{HeadDim: Ptr(0)}, "head_dim must be positive (got 0)", [4]int{}},
		{"key heads 0", MetadataConfig{KeyHeads: Ptr(0)}, "key_heads must be positive (got 0)", [4]int{}},
		{"value heads -2", MetadataConfig{ValueHeads: Ptr(-2)}, "value_heads must be positive (got -2)", [4]int{}},
		{"key dim 0", MetadataConfig{KeyDim: Ptr(0)}, "key_dim must be positive (got 0)", [4]int{}},
		{"value dim 0", MetadataConfig{ValueDim: Ptr(0)}, "value_dim must be positive (got 0)", [4]int{}},
		{"field order", MetadataConfig{ValueDim: Ptr(0), HeadDim: Ptr(0), BatchSize: Ptr(1)}, "head_dim", [4]int{}},
		{"heads disagree", MetadataConfig{KeyHeads: Ptr(2), ValueHeads: Ptr(4)}, "key heads 2 and value heads 4 differ", [4]int{}},
		{"resolved heads disagree", MetadataConfig{NumHeads: Ptr(4), KeyHeads: Ptr(2)}, "key heads 2 and value heads 4 differ", [4]int{}},
		{"bad partition axis", MetadataConfig{PartitionAxis: json.RawMessage(`{`)}, "partition_axis is not valid JSON", [4]int{}},
	}
	for _, tc := range cases {
		testkit.NewMetadataCase(t, tc.name, tc.cfg, tc.want, NewMetadata, ErrMetadata, func(t *testing.T, m Metadata) {
			assert.Equal(t, tc.shape, m.StateShape())
		})
	}
}

func TestMetadataJSON(t *testing.T) {
	m, err := NewMetadata(MetadataConfig{PartitionAxis: json.RawMessage(` {"head_axis" : "tp"} `), BatchSize: Ptr(2), NumHeads: Ptr(4), HeadDim: Ptr(8)})
	require.NoError(t, err)
	b, err := json.Marshal(m)
	require.NoError(t, err)
	const want = `{"partition_axis":{"head_axis":"tp"},"batch_size":2,"num_heads":4,"head_dim":8,` +
		`"key_heads":null,"value_heads":null,"key_dim":null,"value_dim":null}`
	assert.Equal(t, want, string(b))
	var back Metadata
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, m, back)

	var none Metadata
	require.NoError(t, json.Unmarshal([]byte(`{"partition_axis":null,"batch_size":null}`), &none))
	assert.Equal(t, Metadata{}, none)
	require.NoError(t, json.Unmarshal([]byte(`{"key_dim":0}`), &none))
	require.ErrorIs(t, none.Validate(), ErrMetadata)
}

func TestMetadataIsCopied(t *testing.T) {
	heads := 4
	m, err := NewMetadata(MetadataConfig{NumHeads: &heads})
	require.NoError(t, err)
	heads = 5
	assert.Equal(t, 4, *m.NumHeads, "NewMetadata copies the optional fields")
	v, err := NewView(m, tensor.Float32, nil)
	require.NoError(t, err)
	got := v.Metadata()
	*got.NumHeads = 9
	assert.Equal(t, 4, *v.Metadata().NumHeads, "Metadata returns a copy")
}
