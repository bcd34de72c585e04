package sharding

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// PartitionAxis maps semantic tensor axes to mesh axes: eformer's
// PartitionAxis (v0.0.38, spec section 5). DefaultPartitionAxis returns
// EasyDeL's resolved defaults; change fields on a copy to override them.
// The JSON form uses EasyDeL's field names; a field left out of the JSON
// takes eformer's default, derived from the fields present (see
// UnmarshalJSON).
//
// The fields are those of eformer v0.0.38: newer eformer releases add
// attention_kv_dim_axis and default kv_head_axis to the tp axis; kvmesh
// follows the spec's version and rejects JSON with fields it does not know.
//
// As in EasyDeL, the decode_* fields are resolved once: changing BatchAxis
// on a Go value does not change DecodeBatchAxis, which keeps the value it
// had. A nil decode_* field means "no override".
type PartitionAxis struct {
	// DataParallelAxis is the name of the data-parallel mesh axis ("dp").
	DataParallelAxis string `json:"data_parallel_axis"`
	// FullyShardedDataParallelAxis is the name of the FSDP mesh axis ("fsdp").
	FullyShardedDataParallelAxis string `json:"fully_sharded_data_parallel_axis"`
	// TensorParallelAxis is the name of the tensor-parallel mesh axis ("tp").
	TensorParallelAxis string `json:"tensor_parallel_axis"`
	// SequenceParallelAxis is the name of the sequence-parallel mesh axis ("sp").
	SequenceParallelAxis string `json:"sequence_parallel_axis"`
	// ExpertParallelAxis is the name of the expert-parallel mesh axis ("ep").
	ExpertParallelAxis string `json:"expert_parallel_axis"`

	// BatchAxis shards Batch: ("fsdp", "dp").
	BatchAxis MeshAxes `json:"batch_axis"`
	// SequenceAxis shards Length: "sp".
	SequenceAxis MeshAxes `json:"sequence_axis"`
	// QuerySequenceAxis shards QueryLength: "sp".
	QuerySequenceAxis MeshAxes `json:"query_sequence_axis"`
	// HeadAxis shards Head: "tp".
	HeadAxis MeshAxes `json:"head_axis"`
	// KVHeadAxis shards KVHead: None in eformer v0.0.38.
	KVHeadAxis MeshAxes `json:"kv_head_axis"`
	// KeySequenceAxis shards KVLength: "sp".
	KeySequenceAxis MeshAxes `json:"key_sequence_axis"`
	// HiddenStateAxis shards Embed: "tp".
	HiddenStateAxis MeshAxes `json:"hidden_state_axis"`
	// MLPIntermediateAxis shards MLPIntermediate: "tp".
	MLPIntermediateAxis MeshAxes `json:"mlp_intermediate_axis"`
	// VocabAxis shards Vocab: "tp".
	VocabAxis MeshAxes `json:"vocab_axis"`
	// ExpertAxis shards Expert: "ep".
	ExpertAxis MeshAxes `json:"expert_axis"`
	// ExpertGateAxis shards ExpertGate: None.
	ExpertGateAxis MeshAxes `json:"expert_gate_axis"`
	// AttentionDimAxis shards HeadDim: None.
	AttentionDimAxis MeshAxes `json:"attention_dim_axis"`
	// BiasHeadSequenceAxis shards BiasHeadSeq: None.
	BiasHeadSequenceAxis MeshAxes `json:"bias_head_sequence_axis"`
	// BiasKeySequenceAxis shards BiasKVSeq: None.
	BiasKeySequenceAxis MeshAxes `json:"bias_key_sequence_axis"`

	// DecodeBatchAxis overrides BatchAxis in generation modes: ("fsdp", "dp").
	DecodeBatchAxis MeshAxes `json:"decode_batch_axis"`
	// DecodeQuerySequenceAxis overrides QuerySequenceAxis in generation
	// modes: None.
	DecodeQuerySequenceAxis MeshAxes `json:"decode_query_sequence_axis"`
	// DecodeHeadAxis overrides HeadAxis in generation modes: "tp".
	DecodeHeadAxis MeshAxes `json:"decode_head_axis"`
	// DecodeKVHeadAxis overrides KVHeadAxis in generation modes: None.
	DecodeKVHeadAxis MeshAxes `json:"decode_kv_head_axis"`
	// DecodeKeySequenceAxis overrides KeySequenceAxis in generation modes:
	// "sp".
	DecodeKeySequenceAxis MeshAxes `json:"decode_key_sequence_axis"`
	// DecodeAttentionDimAxis overrides AttentionDimAxis in generation
	// modes: None.
	DecodeAttentionDimAxis MeshAxes `json:"decode_attention_dim_axis"`
	// DecodeAttentionKVDimAxis shards KVHeadDim in every mode: None.
	// eformer v0.0.38 maps KV_HEAD_DIM to this decode_* attribute directly
	// (sic), so it is not only a generation-mode override.
	DecodeAttentionKVDimAxis MeshAxes `json:"decode_attention_kv_dim_axis"`
}

// DefaultPartitionAxis returns eformer v0.0.38's PartitionAxis() after
// default resolution (spec section 5 table).
func DefaultPartitionAxis() PartitionAxis {
	var pa PartitionAxis
	if err := pa.UnmarshalJSON([]byte("{}")); err != nil {
		panic(err) // the empty object always decodes
	}
	return pa
}

// axisField is one field of PartitionAxis in the JSON object, in eformer's
// order.
type axisField struct {
	name string
	// rule returns the field of pa, for a MeshAxes field.
	rule func(pa *PartitionAxis) *MeshAxes
	// mesh returns the field of pa, for a mesh-name field.
	mesh func(pa *PartitionAxis) *string
	// def is eformer's default for a field left out, computed from the
	// fields already resolved (fields come in dependency order).
	def func(pa *PartitionAxis) MeshAxes
	// meshDef is the default of a mesh-name field.
	meshDef string
}

func one(s string) MeshAxes { return MeshAxes{s} }

// axisFields lists PartitionAxis's fields in eformer's order, which is
// also dependency order for the defaults.
var axisFields = []axisField{
	{name: "data_parallel_axis", mesh: func(p *PartitionAxis) *string { return &p.DataParallelAxis }, meshDef: DP},
	{name: "fully_sharded_data_parallel_axis", mesh: func(p *PartitionAxis) *string { return &p.FullyShardedDataParallelAxis }, meshDef: FSDP},
	{name: "tensor_parallel_axis", mesh: func(p *PartitionAxis) *string { return &p.TensorParallelAxis }, meshDef: TP},
	{name: "sequence_parallel_axis", mesh: func(p *PartitionAxis) *string { return &p.SequenceParallelAxis }, meshDef: SP},
	{name: "expert_parallel_axis", mesh: func(p *PartitionAxis) *string { return &p.ExpertParallelAxis }, meshDef: EP},

	{name: "batch_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.BatchAxis },
		def: func(p *PartitionAxis) MeshAxes {
			return MeshAxes{p.FullyShardedDataParallelAxis, p.DataParallelAxis}
		}},
	{name: "sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.SequenceAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.SequenceParallelAxis) }},
	{name: "query_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.QuerySequenceAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.SequenceParallelAxis) }},
	{name: "head_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.HeadAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.TensorParallelAxis) }},
	{name: "kv_head_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.KVHeadAxis }},
	{name: "key_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.KeySequenceAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.SequenceParallelAxis) }},
	{name: "hidden_state_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.HiddenStateAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.TensorParallelAxis) }},
	{name: "mlp_intermediate_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.MLPIntermediateAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.TensorParallelAxis) }},
	{name: "vocab_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.VocabAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.TensorParallelAxis) }},
	{name: "expert_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.ExpertAxis },
		def: func(p *PartitionAxis) MeshAxes { return one(p.ExpertParallelAxis) }},
	{name: "expert_gate_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.ExpertGateAxis }},
	{name: "attention_dim_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.AttentionDimAxis }},
	{name: "bias_head_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.BiasHeadSequenceAxis }},
	{name: "bias_key_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.BiasKeySequenceAxis }},

	{name: "decode_batch_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeBatchAxis },
		def: func(p *PartitionAxis) MeshAxes { return slices.Clone(p.BatchAxis) }},
	{name: "decode_query_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeQuerySequenceAxis }},
	{name: "decode_head_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeHeadAxis },
		def: func(p *PartitionAxis) MeshAxes { return slices.Clone(p.HeadAxis) }},
	{name: "decode_kv_head_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeKVHeadAxis },
		def: func(p *PartitionAxis) MeshAxes { return slices.Clone(p.KVHeadAxis) }},
	{name: "decode_key_sequence_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeKeySequenceAxis },
		def: func(p *PartitionAxis) MeshAxes { return slices.Clone(p.KeySequenceAxis) }},
	{name: "decode_attention_dim_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeAttentionDimAxis }},
	{name: "decode_attention_kv_dim_axis", rule: func(p *PartitionAxis) *MeshAxes { return &p.DecodeAttentionKVDimAxis }},
}

// Validate checks that the mesh-name fields are not empty and that no
// rule names an empty mesh axis or the same mesh axis twice. It does not
// require the names to be mesh axes: a spec that names an axis the mesh
// lacks is corrected to replicate that tensor axis (Correct), as in
// EasyDeL.
func (pa PartitionAxis) Validate() error {
	for _, f := range axisFields {
		if f.mesh != nil {
			if *f.mesh(&pa) == "" {
				return fmt.Errorf("%w: %s is empty", ErrPartitionAxis, f.name)
			}
			continue
		}
		if err := f.rule(&pa).validate(); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrPartitionAxis, f.name, err)
		}
	}
	return nil
}

// Clone returns a deep copy of pa.
func (pa PartitionAxis) Clone() PartitionAxis {
	for _, f := range axisFields {
		if f.rule != nil {
			r := f.rule(&pa)
			*r = slices.Clone(*r)
		}
	}
	return pa
}

// MarshalJSON encodes every field, in eformer's order, with EasyDeL's
// names; rules are null, "name" or ["name", ...].
func (pa PartitionAxis) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range axisFields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.name)
		b.Write(k)
		b.WriteByte(':')
		var v []byte
		var err error
		if f.mesh != nil {
			v, err = json.Marshal(*f.mesh(&pa))
		} else {
			v, err = f.rule(&pa).MarshalJSON()
		}
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON decodes EasyDeL's JSON form. A field that is present takes
// its value (null is None); a field left out takes eformer's default,
// derived as eformer's __post_init__ does: batch_axis from the fsdp and
// dp names, sequence, query-sequence and key-sequence axes from the sp
// name, head, hidden-state, MLP and vocab axes from the tp name, the
// expert axis from the ep name, and decode_batch/head/kv_head/key_sequence
// from their resolved standard fields; the rest default to None. An
// unknown field is an error that names it, and so is a result that fails
// Validate.
func (pa *PartitionAxis) UnmarshalJSON(data []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("%w: %v", ErrPartitionAxis, err)
	}
	known := map[string]bool{}
	for _, f := range axisFields {
		known[f.name] = true
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !known[k] {
			return fmt.Errorf("%w: unknown field %q", ErrPartitionAxis, k)
		}
	}
	var out PartitionAxis
	for _, f := range axisFields {
		v, present := raw[f.name]
		switch {
		case f.mesh != nil && present:
			if err := json.Unmarshal(v, f.mesh(&out)); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrPartitionAxis, f.name, err)
			}
		case f.mesh != nil:
			*f.mesh(&out) = f.meshDef
		case present:
			if err := f.rule(&out).UnmarshalJSON(v); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrPartitionAxis, f.name, err)
			}
		case f.def != nil:
			*f.rule(&out) = f.def(&out)
		}
	}
	if err := out.Validate(); err != nil {
		return err
	}
	*pa = out
	return nil
}

// rule returns the mesh axes semantic axis name resolves to in mode, and
// whether the name is known. The generation override applies only in a
// generation mode and only when it is not None.
func (pa PartitionAxis) rule(name string, mode Mode) (MeshAxes, bool) {
	var std, gen MeshAxes
	switch name {
	case Empty:
		return nil, true
	case Batch:
		std, gen = pa.BatchAxis, pa.DecodeBatchAxis
	case Length:
		std = pa.SequenceAxis
	case QueryLength:
		std, gen = pa.QuerySequenceAxis, pa.DecodeQuerySequenceAxis
	case KVLength:
		std, gen = pa.KeySequenceAxis, pa.DecodeKeySequenceAxis
	case Embed:
		std = pa.HiddenStateAxis
	case Head:
		std, gen = pa.HeadAxis, pa.DecodeHeadAxis
	case KVHead:
		std, gen = pa.KVHeadAxis, pa.DecodeKVHeadAxis
	case MLPIntermediate:
		std = pa.MLPIntermediateAxis
	case Vocab:
		std = pa.VocabAxis
	case Expert:
		std = pa.ExpertAxis
	case ExpertGate:
		std = pa.ExpertGateAxis
	case HeadDim:
		std, gen = pa.AttentionDimAxis, pa.DecodeAttentionDimAxis
	case KVHeadDim:
		std = pa.DecodeAttentionKVDimAxis
	case BiasHeadSeq:
		std = pa.BiasHeadSequenceAxis
	case BiasKVSeq:
		std = pa.BiasKeySequenceAxis
	case DataParallel:
		std = one(pa.DataParallelAxis)
	case FullyShardedDataParallel:
		std = one(pa.FullyShardedDataParallelAxis)
	case TensorParallel:
		std = one(pa.TensorParallelAxis)
	case SequenceParallel:
		std = one(pa.SequenceParallelAxis)
	case ExpertParallel:
		std = one(pa.ExpertParallelAxis)
	default:
		return nil, false
	}
	if mode.IsGeneration() && !gen.IsNone() {
		return slices.Clone(gen), true
	}
	return slices.Clone(std), true
}
