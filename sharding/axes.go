package sharding

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The semantic axis names of eformer.common_types: what a tensor axis
// means, resolved to mesh axes by a PartitionAxis. EasyDeL spells them in
// capitals (BATCH, KV_LENGTH, ...); the values are EasyDeL's.
const (
	// Empty ("_", EasyDeL's EMPTY) is never sharded.
	Empty = "_"
	// Batch is the batch axis (BATCH).
	Batch = "__BATCH__"
	// Length is the general sequence-length axis (LENGTH).
	Length = "__LENGTH__"
	// KVLength is the key/value sequence-length axis (KV_LENGTH).
	KVLength = "__KV_LENGTH__"
	// QueryLength is the query sequence-length axis (QUERY_LENGTH).
	QueryLength = "__QUERY_LENGTH__"
	// Embed is the embedding / hidden-state axis (EMBED).
	Embed = "__EMBED__"
	// Head is the attention-head axis (HEAD).
	Head = "__HEAD__"
	// KVHead is the key/value-head axis (KV_HEAD).
	KVHead = "__KV_HEAD__"
	// MLPIntermediate is the MLP intermediate axis (MLP_INTERMEDIATE).
	MLPIntermediate = "__MLP_INTERMEDIATE__"
	// Vocab is the vocabulary axis (VOCAB).
	Vocab = "__VOCAB__"
	// Expert is the mixture-of-experts expert axis (EXPERT).
	Expert = "__EXPERT__"
	// ExpertGate is the expert-gate axis (EXPERT_GATE).
	ExpertGate = "__EXPERT_GATE__"
	// HeadDim is the per-head dimension of queries (HEAD_DIM).
	HeadDim = "__HEAD_DIM__"
	// KVHeadDim is the per-head dimension of keys and values (KV_HEAD_DIM).
	KVHeadDim = "__KV_HEAD_DIM__"
	// BiasHeadSeq is the head/sequence axis of attention biases
	// (BIAS_HEAD_SEQ).
	BiasHeadSeq = "__BIAS_HEAD_SEQ__"
	// BiasKVSeq is the key-sequence axis of attention biases (BIAS_KV_SEQ).
	BiasKVSeq = "__BIAS_KV_SEQ__"
	// DataParallel names the data-parallel mesh axis itself (DATA_PARALLEL).
	DataParallel = "__DATA_PARALLEL__"
	// FullyShardedDataParallel names the FSDP mesh axis itself
	// (FULLY_SHARDED_DATA_PARALLEL).
	FullyShardedDataParallel = "__FULLY_SHARDED_DATA_PARALLEL__"
	// TensorParallel names the tensor-parallel mesh axis itself
	// (TENSOR_PARALLEL).
	TensorParallel = "__TENSOR_PARALLEL__"
	// SequenceParallel names the sequence-parallel mesh axis itself
	// (SEQUENCE_PARALLEL).
	SequenceParallel = "__SEQUENCE_PARALLEL__"
	// ExpertParallel names the expert-parallel mesh axis itself
	// (EXPERT_PARALLEL).
	ExpertParallel = "__EXPERT_PARALLEL__"
)

// Mode is a runtime mode (eformer's MODE_*). Only the generation modes,
// ModeDecode and ModeInsert, use a PartitionAxis's decode_* overrides.
type Mode string

// The runtime modes, with EasyDeL's values.
const (
	// ModePrefill is MODE_PREFILL.
	ModePrefill Mode = "__prefill__"
	// ModeDecode is MODE_DECODE, autoregressive decoding.
	ModeDecode Mode = "__autoregressive__"
	// ModeTrain is MODE_TRAIN.
	ModeTrain Mode = "__train__"
	// ModeInsert is MODE_INSERT, inserting into a cache.
	ModeInsert Mode = "__insert__"
)

// Valid reports whether m is one of the four modes.
func (m Mode) Valid() bool {
	switch m {
	case ModePrefill, ModeDecode, ModeTrain, ModeInsert:
		return true
	}
	return false
}

// IsGeneration reports whether m is a generation mode (EasyDeL's
// GENERATION_MODES: decode and insert).
func (m Mode) IsGeneration() bool { return m == ModeDecode || m == ModeInsert }

// InferMode returns the mode EasyDeL's PartitionManager.resolve infers
// when it is given a dimension index instead of a mode: ModeDecode when
// shape[dim] is 1, else ModeTrain. A dim outside the shape is an error.
func InferMode(shape []int, dim int) (Mode, error) {
	if dim < 0 || dim >= len(shape) {
		return "", fmt.Errorf("%w: mode dimension %d outside shape %v", ErrMode, dim, shape)
	}
	if shape[dim] == 1 {
		return ModeDecode, nil
	}
	return ModeTrain, nil
}

// MeshAxes is the sharding of one tensor axis: the mesh axes it is split
// over, the first the most significant (JAX's PartitionSpec entry). Nil or
// empty means not sharded (None). Its JSON form is EasyDeL's AxisType:
// null, a single name ("tp") or a list of names (["fsdp", "dp"]).
type MeshAxes []string

// IsNone reports whether a is not sharded.
func (a MeshAxes) IsNone() bool { return len(a) == 0 }

// String formats a as Python prints a PartitionSpec entry: None, 'tp' or
// ('fsdp', 'dp').
func (a MeshAxes) String() string {
	switch len(a) {
	case 0:
		return "None"
	case 1:
		return "'" + a[0] + "'"
	}
	q := make([]string, len(a))
	for i, s := range a {
		q[i] = "'" + s + "'"
	}
	return "(" + strings.Join(q, ", ") + ")"
}

// MarshalJSON encodes a as null, "name" or ["name", ...].
func (a MeshAxes) MarshalJSON() ([]byte, error) {
	switch len(a) {
	case 0:
		return []byte("null"), nil
	case 1:
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON decodes null, a string or a list of strings. An empty
// list decodes to nil.
func (a *MeshAxes) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*a = nil
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = MeshAxes{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("%w: mesh axes %s: want null, a name or a list of names", ErrPartitionAxis, b)
	}
	if len(l) == 0 {
		l = nil
	}
	*a = l
	return nil
}

// validate checks that every name is non-empty and appears once.
func (a MeshAxes) validate() error {
	for i, s := range a {
		if s == "" {
			return fmt.Errorf("empty mesh axis name in %v", []string(a))
		}
		if slices.Contains(a[:i], s) {
			return fmt.Errorf("mesh axis %q twice in %v", s, []string(a))
		}
	}
	return nil
}
