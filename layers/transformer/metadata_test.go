package transformer

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewMetadataValidation(t *testing.T) {
	ok := MetadataConfig{BatchSize: 2, SequenceLength: 8, NumHiddenLayers: 3, NumHeads: Ptr(4), HeadDim: Ptr(16)}
	with := func(f func(c *MetadataConfig)) MetadataConfig { c := ok; f(&c); return c }
	const (
		batch = "batch_size must be positive"
		seq   = "sequence_length must be positive"
		dims  = "Either head_dim or both key_dim and value_dim must be specified"
		heads = "Either num_heads or both key_heads and value_heads must be specified"
	)
	cases := []struct {
		name string
		cfg  MetadataConfig
		want string // substring of the error; "" = valid
	}{
		{"valid", ok, ""},
		{"batch zero", with(func(c *MetadataConfig) { c.BatchSize = 0 }), batch + " (got 0)"},
		{"batch negative", with(func(c *MetadataConfig) { c.BatchSize = -1 }), batch + " (got -1)"},
		{"batch before seq", with(func(c *MetadataConfig) { c.BatchSize, c.SequenceLength = 0, 0 }), batch},
		{"seq zero", with(func(c *MetadataConfig) { c.SequenceLength = 0 }), seq + " (got 0)"},
		{"seq negative", with(func(c *MetadataConfig) { c.SequenceLength = -5 }), seq + " (got -5)"},
		{"seq before dims", with(func(c *MetadataConfig) { c.SequenceLength, c.HeadDim = 0, nil }), seq},
		{"no head_dim, no dims", with(func(c *MetadataConfig) { c.HeadDim = nil }), dims + " (key_dim=None, value_dim=None)"},
		{"no head_dim, key_dim only", with(func(c *MetadataConfig) { c.HeadDim, c.KeyDim = nil, Ptr(8) }), dims + " (key_dim=8, value_dim=None)"},
		{"no head_dim, value_dim only", with(func(c *MetadataConfig) { c.HeadDim, c.ValueDim = nil, Ptr(8) }), dims + " (key_dim=None, value_dim=8)"},
		{"no head_dim, both dims", with(func(c *MetadataConfig) { c.HeadDim, c.KeyDim, c.ValueDim = nil, Ptr(8), Ptr(4) }), ""},
		{"dims before heads", with(func(c *MetadataConfig) { c.HeadDim, c.NumHeads = nil, nil }), dims},
		{"no num_heads, no heads", with(func(c *MetadataConfig) { c.NumHeads = nil }), heads + " (key_heads=None, value_heads=None)"},
		{"no num_heads, key_heads only", with(func(c *MetadataConfig) { c.NumHeads, c.KeyHeads = nil, Ptr(2) }), heads + " (key_heads=2, value_heads=None)"},
		{"no num_heads, value_heads only", with(func(c *MetadataConfig) { c.NumHeads, c.ValueHeads = nil, Ptr(2) }), heads + " (key_heads=None, value_heads=2)"},
		{"no num_heads, both heads", with(func(c *MetadataConfig) { c.NumHeads, c.KeyHeads, c.ValueHeads = nil, Ptr(2), Ptr(3) }), ""},
		// kvmesh's own checks run after EasyDeL's.
		{"heads checked before layers", with(func(c *MetadataConfig) { c.NumHeads, c.NumHiddenLayers = nil, -1 }), heads},
		{"negative layers", with(func(c *MetadataConfig) { c.NumHiddenLayers = -1 }), "num_hidden_layers must not be negative (got -1)"},
		{"zero layers", with(func(c *MetadataConfig) { c.NumHiddenLayers = 0 }), ""},
		{"head_dim 0 resolves key_dim 0", with(func(c *MetadataConfig) { c.HeadDim = Ptr(0) }), "key_dim must be positive (got 0)"},
		{"key_dim 0 without head_dim is not None", with(func(c *MetadataConfig) { c.HeadDim, c.KeyDim, c.ValueDim = nil, Ptr(0), Ptr(4) }), "key_dim must be positive (got 0)"},
		{"value_dim 0 without head_dim", with(func(c *MetadataConfig) { c.HeadDim, c.KeyDim, c.ValueDim = nil, Ptr(4), Ptr(0) }), "value_dim must be positive (got 0)"},
		{"negative num_heads", with(func(c *MetadataConfig) { c.NumHeads = Ptr(-2) }), "key_heads must be positive (got -2)"},
		{"key_heads 0 without num_heads", with(func(c *MetadataConfig) { c.NumHeads, c.KeyHeads, c.ValueHeads = nil, Ptr(0), Ptr(2) }), "key_heads must be positive (got 0)"},
		{"value_heads 0 without num_heads", with(func(c *MetadataConfig) { c.NumHeads, c.KeyHeads, c.ValueHeads = nil, Ptr(2), Ptr(0) }), "value_heads must be positive (got 0)"},
		{"negative pad token is fine", with(func(c *MetadataConfig) { c.PadTokenID = -1 }), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewMetadata(tc.cfg)
			assert.Equal(t, err, tc.cfg.Validate(), "Validate and NewMetadata agree")
			if tc.want == "" {
				require.NoError(t, err)
				require.NoError(t, m.Validate())
				return
			}
			require.ErrorIs(t, err, ErrMetadata)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, Metadata{}, m)
		})
	}
}

func TestNewMetadataResolution(t *testing.T) {
	cases := []struct {
		name                  string
		cfg                   MetadataConfig
		kh, vh, kd, vd        int
		updateCausal, createB bool
	}{
		{"num_heads and head_dim fill all", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(16)}, 4, 4, 16, 16, true, true},
		{"explicit dims win over head_dim", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(16), KeyDim: Ptr(32)}, 4, 4, 32, 16, true, true},
		{"zero dim means missing (python or)", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(16), ValueDim: Ptr(0)}, 4, 4, 16, 16, true, true},
		{"explicit heads win over num_heads", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(16), ValueHeads: Ptr(2)}, 4, 2, 16, 16, true, true},
		{"zero heads mean missing", MetadataConfig{NumHeads: Ptr(4), HeadDim: Ptr(16), KeyHeads: Ptr(0)}, 4, 4, 16, 16, true, true},
		{"no shorthands", MetadataConfig{KeyHeads: Ptr(1), ValueHeads: Ptr(2), KeyDim: Ptr(3), ValueDim: Ptr(5)}, 1, 2, 3, 5, true, true},
		{"flags off", MetadataConfig{NumHeads: Ptr(1), HeadDim: Ptr(1), UpdateCausalMask: Ptr(false), CreateAttentionBias: Ptr(false)}, 1, 1, 1, 1, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.BatchSize, cfg.SequenceLength, cfg.NumHiddenLayers, cfg.PadTokenID = 3, 7, 2, 5
			m, err := NewMetadata(cfg)
			require.NoError(t, err)
			assert.Equal(t, []int{tc.kh, tc.vh, tc.kd, tc.vd}, []int{m.KeyHeads, m.ValueHeads, m.KeyDim, m.ValueDim})
			assert.Equal(t, []int{3, 7, 2, 5}, []int{m.BatchSize, m.SequenceLength, m.NumHiddenLayers, m.PadTokenID})
			assert.Equal(t, tc.updateCausal, m.UpdateCausalMask)
			assert.Equal(t, tc.createB, m.CreateAttentionBias)
			assert.Equal(t, cfg.NumHeads, m.NumHeads)
			assert.Equal(t, cfg.HeadDim, m.HeadDim)
			if cfg.NumHeads != nil {
				assert.NotSame(t, cfg.NumHeads, m.NumHeads, "metadata keeps its own copy")
			}
		})
	}
}

func TestMetadataValidate(t *testing.T) {
	good := Metadata{BatchSize: 1, SequenceLength: 1, KeyHeads: 1, ValueHeads: 1, KeyDim: 1, ValueDim: 1}
	require.NoError(t, good.Validate())
	cases := []struct {
		f    func(m *Metadata)
		want string
	}{
		{func(m *Metadata) { m.BatchSize = 0 }, "batch_size must be positive"},
		{func(m *Metadata) { m.SequenceLength = 0 }, "sequence_length must be positive"},
		{func(m *Metadata) { m.NumHiddenLayers = -3 }, "num_hidden_layers must not be negative (got -3)"},
		{func(m *Metadata) { m.KeyHeads = 0 }, "key_heads must be positive"},
		{func(m *Metadata) { m.ValueHeads = -1 }, "value_heads must be positive (got -1)"},
		{func(m *Metadata) { m.KeyDim = 0 }, "key_dim must be positive"},
		{func(m *Metadata) { m.ValueDim = 0 }, "value_dim must be positive"},
	}
	for _, tc := range cases {
		m := good
		tc.f(&m)
		err := m.Validate()
		require.ErrorIs(t, err, ErrMetadata)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestMetadataJSON(t *testing.T) {
	withShorthands, err := NewMetadata(MetadataConfig{BatchSize: 2, SequenceLength: 16, NumHiddenLayers: 4, PadTokenID: 7,
		NumHeads: Ptr(8), HeadDim: Ptr(64), KeyDim: Ptr(32), CreateAttentionBias: Ptr(false)})
	require.NoError(t, err)
	without, err := NewMetadata(MetadataConfig{BatchSize: 1, SequenceLength: 3, KeyHeads: Ptr(2), ValueHeads: Ptr(1), KeyDim: Ptr(4), ValueDim: Ptr(5)})
	require.NoError(t, err)

	// The field names and values of EasyDeL's to_dict, written by hand.
	wantDicts := []string{
		`{"batch_size":2,"sequence_length":16,"num_hidden_layers":4,"pad_token_id":7,"num_heads":8,"head_dim":64,
		  "key_heads":8,"value_heads":8,"key_dim":32,"value_dim":64,"update_causal_mask":true,"create_attention_bias":false}`,
		`{"batch_size":1,"sequence_length":3,"num_hidden_layers":0,"pad_token_id":0,"num_heads":null,"head_dim":null,
		  "key_heads":2,"value_heads":1,"key_dim":4,"value_dim":5,"update_causal_mask":true,"create_attention_bias":true}`,
	}
	for i, m := range []Metadata{withShorthands, without} {
		b, err := json.Marshal(m)
		require.NoError(t, err)
		assert.JSONEq(t, wantDicts[i], string(b))

		var back Metadata
		require.NoError(t, json.Unmarshal(b, &back))
		assert.Equal(t, m, back)
		assert.True(t, m.equal(back))

		// And EasyDeL's JSON decodes to the same value.
		var fromPython Metadata
		require.NoError(t, json.Unmarshal([]byte(wantDicts[i]), &fromPython))
		assert.Equal(t, m, fromPython)
	}
	assert.False(t, withShorthands.equal(without))
	other := withShorthands.clone()
	*other.HeadDim = 65
	assert.False(t, withShorthands.equal(other), "pointers compare by value")
	assert.Equal(t, 64, *withShorthands.HeadDim, "clone does not share pointers")
}
