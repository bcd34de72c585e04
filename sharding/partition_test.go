package sharding

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestResolveDefaults checks every row of the spec section 5 table, in a
// non-generation and a generation mode.
func TestResolveDefaults(t *testing.T) {
	pa := DefaultPartitionAxis()
	tests := []struct {
		axis string
		want MeshAxes // same in every mode with the defaults
	}{
		{Batch, MeshAxes{FSDP, DP}},
		{KVLength, MeshAxes{SP}},
		{KVHead, nil},
		{KVHeadDim, nil},
		{Head, MeshAxes{TP}},
		{HeadDim, nil},
		{Length, MeshAxes{SP}},
		{QueryLength, MeshAxes{SP}},
		{Embed, MeshAxes{TP}},
		{MLPIntermediate, MeshAxes{TP}},
		{Vocab, MeshAxes{TP}},
		{Expert, MeshAxes{EP}},
		{ExpertGate, nil},
		{BiasHeadSeq, nil},
		{BiasKVSeq, nil},
		{Empty, nil},
		{DataParallel, MeshAxes{DP}},
		{FullyShardedDataParallel, MeshAxes{FSDP}},
		{TensorParallel, MeshAxes{TP}},
		{SequenceParallel, MeshAxes{SP}},
		{ExpertParallel, MeshAxes{EP}},
	}
	for _, tt := range tests {
		for _, mode := range []Mode{ModePrefill, ModeTrain, ModeDecode, ModeInsert} {
			got, err := Resolve(pa, []string{tt.axis}, mode)
			require.NoError(t, err)
			assert.Equal(t, Spec{tt.want}, got, "%s in %s", tt.axis, mode)
		}
	}
}

func TestResolveCacheSpecs(t *testing.T) {
	pa := DefaultPartitionAxis()
	tests := []struct {
		name string
		axes []string
		want string
	}{
		{"transformer kv", TransformerKVAxes(), "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)"},
		{"transformer index", TransformerIndexAxes(), "PartitionSpec(('fsdp', 'dp'))"},
		{"paged pages", PagedPageAxes(), "PartitionSpec('tp', None, None, None)"},
		{"recurrent", RecurrentStateAxes(), "PartitionSpec(('fsdp', 'dp'), 'tp', 'sp')"},
		{"lightning", LightningStateAxes(), "PartitionSpec(('fsdp', 'dp'), 'tp', None, None)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Resolve(pa, tt.axes, ModePrefill)
			require.NoError(t, err)
			assert.Equal(t, tt.want, s.String())
		})
	}
}

// TestResolveDecodeOverrides checks that each decode_* field applies in
// the generation modes only, and that a None override falls back.
func TestResolveDecodeOverrides(t *testing.T) {
	tests := []struct {
		axis string
		set  func(pa *PartitionAxis)
	}{
		{Batch, func(pa *PartitionAxis) { pa.DecodeBatchAxis = MeshAxes{EP} }},
		{QueryLength, func(pa *PartitionAxis) { pa.DecodeQuerySequenceAxis = MeshAxes{EP} }},
		{KVLength, func(pa *PartitionAxis) { pa.DecodeKeySequenceAxis = MeshAxes{EP} }},
		{Head, func(pa *PartitionAxis) { pa.DecodeHeadAxis = MeshAxes{EP} }},
		{KVHead, func(pa *PartitionAxis) { pa.DecodeKVHeadAxis = MeshAxes{EP} }},
		{HeadDim, func(pa *PartitionAxis) { pa.DecodeAttentionDimAxis = MeshAxes{EP} }},
	}
	for _, tt := range tests {
		t.Run(tt.axis, func(t *testing.T) {
			base := DefaultPartitionAxis()
			std, err := Resolve(base, []string{tt.axis}, ModeTrain)
			require.NoError(t, err)
			pa := base.Clone()
			tt.set(&pa)
			for _, mode := range []Mode{ModeDecode, ModeInsert} {
				got, err := Resolve(pa, []string{tt.axis}, mode)
				require.NoError(t, err)
				assert.Equal(t, Spec{{EP}}, got, mode)
			}
			for _, mode := range []Mode{ModePrefill, ModeTrain} {
				got, err := Resolve(pa, []string{tt.axis}, mode)
				require.NoError(t, err)
				assert.Equal(t, std, got, mode)
			}
		})
	}
	// A None override means no override: decode falls back to the standard rule.
	pa := DefaultPartitionAxis()
	pa.DecodeHeadAxis = nil
	pa.HeadAxis = MeshAxes{SP}
	got, err := Resolve(pa, []string{Head}, ModeDecode)
	require.NoError(t, err)
	assert.Equal(t, Spec{{SP}}, got)
	// KV_HEAD_DIM reads decode_attention_kv_dim_axis in every mode (sic).
	pa = DefaultPartitionAxis()
	pa.DecodeAttentionKVDimAxis = MeshAxes{TP}
	for _, mode := range []Mode{ModePrefill, ModeDecode} {
		got, err := Resolve(pa, []string{KVHeadDim}, mode)
		require.NoError(t, err)
		assert.Equal(t, Spec{{TP}}, got, mode)
	}
}

func TestResolveErrors(t *testing.T) {
	pa := DefaultPartitionAxis()
	_, err := Resolve(pa, []string{Batch, "__BOGUS__"}, ModePrefill)
	require.ErrorIs(t, err, ErrUnknownAxis)
	assert.Contains(t, err.Error(), "Unknown semantic axis name: '__BOGUS__'")
	_, err = Resolve(pa, []string{""}, ModePrefill)
	assert.ErrorIs(t, err, ErrUnknownAxis, "the empty string is not None; use Empty")
	_, err = Resolve(pa, []string{Batch}, Mode("__serve__"))
	require.ErrorIs(t, err, ErrMode)
	assert.Contains(t, err.Error(), `"__serve__"`)
	bad := DefaultPartitionAxis()
	bad.HeadAxis = MeshAxes{TP, TP}
	_, err = Resolve(bad, []string{Batch}, ModePrefill)
	require.ErrorIs(t, err, ErrPartitionAxis)
	assert.Contains(t, err.Error(), `head_axis: mesh axis "tp" twice`)
}

func TestResolveDoesNotAlias(t *testing.T) {
	pa := DefaultPartitionAxis()
	s, err := Resolve(pa, []string{Batch}, ModePrefill)
	require.NoError(t, err)
	s[0][0] = "zz"
	assert.Equal(t, MeshAxes{FSDP, DP}, pa.BatchAxis)
	assert.Equal(t, MeshAxes{FSDP, DP}, DefaultPartitionAxis().BatchAxis)
}

func TestModes(t *testing.T) {
	assert.Equal(t, Mode("__prefill__"), ModePrefill)
	assert.Equal(t, Mode("__autoregressive__"), ModeDecode)
	assert.Equal(t, Mode("__train__"), ModeTrain)
	assert.Equal(t, Mode("__insert__"), ModeInsert)
	assert.True(t, ModeDecode.IsGeneration())
	assert.True(t, ModeInsert.IsGeneration())
	assert.False(t, ModePrefill.IsGeneration())
	assert.False(t, ModeTrain.IsGeneration())
	assert.False(t, Mode("x").Valid())

	m, err := InferMode([]int{4, 1, 8}, 1)
	require.NoError(t, err)
	assert.Equal(t, ModeDecode, m)
	m, err = InferMode([]int{4, 7, 8}, 1)
	require.NoError(t, err)
	assert.Equal(t, ModeTrain, m)
	_, err = InferMode([]int{4}, 1)
	assert.ErrorIs(t, err, ErrMode)
}

func TestSemanticNames(t *testing.T) {
	// EasyDeL's values (eformer.common_types).
	assert.Equal(t, "__BATCH__", Batch)
	assert.Equal(t, "__KV_LENGTH__", KVLength)
	assert.Equal(t, "__KV_HEAD__", KVHead)
	assert.Equal(t, "__KV_HEAD_DIM__", KVHeadDim)
	assert.Equal(t, "__HEAD__", Head)
	assert.Equal(t, "__HEAD_DIM__", HeadDim)
	assert.Equal(t, "__QUERY_LENGTH__", QueryLength)
	assert.Equal(t, "__LENGTH__", Length)
	assert.Equal(t, "__EMBED__", Embed)
	assert.Equal(t, "_", Empty)
}

func TestPartitionAxisJSONDefaults(t *testing.T) {
	b, err := json.Marshal(DefaultPartitionAxis())
	require.NoError(t, err)
	const want = `{"data_parallel_axis":"dp","fully_sharded_data_parallel_axis":"fsdp","tensor_parallel_axis":"tp",` +
		`"sequence_parallel_axis":"sp","expert_parallel_axis":"ep","batch_axis":["fsdp","dp"],"sequence_axis":"sp",` +
		`"query_sequence_axis":"sp","head_axis":"tp","kv_head_axis":null,"key_sequence_axis":"sp","hidden_state_axis":"tp",` +
		`"mlp_intermediate_axis":"tp","vocab_axis":"tp","expert_axis":"ep","expert_gate_axis":null,"attention_dim_axis":null,` +
		`"bias_head_sequence_axis":null,"bias_key_sequence_axis":null,"decode_batch_axis":["fsdp","dp"],` +
		`"decode_query_sequence_axis":null,"decode_head_axis":"tp","decode_kv_head_axis":null,"decode_key_sequence_axis":"sp",` +
		`"decode_attention_dim_axis":null,"decode_attention_kv_dim_axis":null}`
	assert.JSONEq(t, want, string(b))

	var back PartitionAxis
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, DefaultPartitionAxis(), back)
}

// TestPartitionAxisJSONDerivesDefaults checks eformer's NOT_GIVEN
// resolution: absent fields follow the fields that are present.
func TestPartitionAxisJSONDerivesDefaults(t *testing.T) {
	var pa PartitionAxis
	require.NoError(t, json.Unmarshal([]byte(`{"tensor_parallel_axis":"tp","data_parallel_axis":"dp",
		"batch_axis":"dp","head_axis":["tp","sp"],"key_sequence_axis":null,"kv_head_axis":"tp"}`), &pa))
	assert.Equal(t, MeshAxes{DP}, pa.BatchAxis)
	assert.Equal(t, MeshAxes{DP}, pa.DecodeBatchAxis, "decode_batch_axis follows batch_axis")
	assert.Equal(t, MeshAxes{TP, SP}, pa.DecodeHeadAxis, "decode_head_axis follows head_axis")
	assert.Nil(t, pa.KeySequenceAxis, "explicit null is None")
	assert.Nil(t, pa.DecodeKeySequenceAxis, "follows the explicit None")
	assert.Equal(t, MeshAxes{TP}, pa.DecodeKVHeadAxis)
	assert.Equal(t, MeshAxes{TP}, pa.HiddenStateAxis, "default from tensor_parallel_axis")

	// Renamed mesh axes flow into the defaults.
	require.NoError(t, json.Unmarshal([]byte(`{"data_parallel_axis":"data","tensor_parallel_axis":"model"}`), &pa))
	assert.Equal(t, MeshAxes{FSDP, "data"}, pa.BatchAxis)
	assert.Equal(t, MeshAxes{"model"}, pa.HeadAxis)
	assert.Equal(t, MeshAxes{"model"}, pa.VocabAxis)
}

func TestPartitionAxisJSONErrors(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"unknown field", `{"batch_axis":"dp","attention_kv_dim_axs":null}`, `unknown field "attention_kv_dim_axs"`},
		{"bad rule", `{"head_axis":3}`, "head_axis"},
		{"empty mesh name", `{"tensor_parallel_axis":""}`, "tensor_parallel_axis is empty"},
		{"empty rule name", `{"head_axis":""}`, "head_axis: empty mesh axis name"},
		{"repeated", `{"batch_axis":["dp","dp"]}`, `batch_axis: mesh axis "dp" twice`},
		{"not an object", `[1]`, "bad partition axis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pa := DefaultPartitionAxis()
			err := json.Unmarshal([]byte(tt.json), &pa)
			require.ErrorIs(t, err, ErrPartitionAxis)
			assert.Contains(t, err.Error(), tt.want)
			assert.Equal(t, DefaultPartitionAxis(), pa, "a failed decode leaves the value unchanged")
		})
	}
}

func TestSpecJSONAndString(t *testing.T) {
	s := Spec{{FSDP, DP}, {SP}, nil, {}}
	b, err := json.Marshal(s)
	require.NoError(t, err)
	assert.Equal(t, `[["fsdp","dp"],"sp",null,null]`, string(b))
	var back Spec
	require.NoError(t, json.Unmarshal(b, &back))
	assert.True(t, s.Equal(back))
	assert.Equal(t, "PartitionSpec(('fsdp', 'dp'), 'sp', None, None)", back.String())
	assert.False(t, s.IsReplicated())
	assert.True(t, Spec{nil, {}}.IsReplicated())
	assert.False(t, s.Equal(Spec{{FSDP, DP}, {SP}, nil}))
	c := s.Clone()
	c[0][0] = "x"
	assert.Equal(t, FSDP, s[0][0])
}
