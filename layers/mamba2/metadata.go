package mamba2

import (
	"encoding/json"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/internal/rawjson"
)

// Metadata describes a Mamba2 state cache: EasyDeL's Mamba2CacheMetaData,
// with its field names as JSON tags so that encoding/json reads and writes
// EasyDeL's to_dict / to_json form.
//
// PartitionAxis is EasyDeL's PartitionAxis in its JSON form, kept verbatim
// and not interpreted here (see package sharding); nil encodes as null.
// The field is partition_axis: EasyDeL's create spells its parameter
// parition_axis and therefore always fails (spec section 9.1); kvmesh uses
// the field's real name.
type Metadata struct {
	PartitionAxis    json.RawMessage `json:"partition_axis"`
	NumHiddenLayers  int             `json:"num_hidden_layers"`
	BatchSize        int             `json:"batch_size"`
	IntermediateSize int             `json:"intermediate_size"`
	NumHeads         int             `json:"num_heads"`
	HeadDim          int             `json:"head_dim"`
	StateSize        int             `json:"state_size"`
	ConvKernelSize   int             `json:"conv_kernel_size"`
	NGroups          int             `json:"n_groups"`
}

// MetadataConfig holds the arguments of EasyDeL's Mamba2CacheMetaData.create.
type MetadataConfig struct {
	PartitionAxis    json.RawMessage
	NumHiddenLayers  int
	BatchSize        int
	IntermediateSize int
	NumHeads         int
	HeadDim          int
	StateSize        int
	ConvKernelSize   int
	NGroups          int
}

// Validate runs NewMetadata's checks.
func (c MetadataConfig) Validate() error {
	_, err := NewMetadata(c)
	return err
}

// NewMetadata validates cfg as EasyDeL's Mamba2CacheMetaData.create means
// to: batch_size, intermediate_size, num_heads, head_dim, state_size,
// conv_kernel_size and n_groups must be positive, checked in that order,
// each failure reported with EasyDeL's message ("batch_size must be
// positive") and the value.
//
// Deviations from EasyDeL: create succeeds (EasyDeL's raises TypeError
// because of its parition_axis typo), and after EasyDeL's checks a negative
// num_hidden_layers and a partition_axis that is not valid JSON are errors
// too. Like EasyDeL, it does not require intermediate_size = num_heads ×
// head_dim or num_heads to be a multiple of n_groups: the cache does not
// depend on either.
func NewMetadata(cfg MetadataConfig) (Metadata, error) {
	m := Metadata(cfg)
	if err := m.Validate(); err != nil {
		return Metadata{}, err
	}
	m.PartitionAxis = rawjson.Compact(m.PartitionAxis)
	return m, nil
}

// Validate checks what NewMetadata checks, in the same order. Decoders
// (snapshots, JSON) use it on metadata they did not build.
func (m Metadata) Validate() error {
	return convssm.CheckMetadata(ErrMetadata, convssm.Sizes{
		{"batch_size", m.BatchSize},
		{"intermediate_size", m.IntermediateSize},
		{"num_heads", m.NumHeads},
		{"head_dim", m.HeadDim},
		{"state_size", m.StateSize},
		{"conv_kernel_size", m.ConvKernelSize},
		{"n_groups", m.NGroups},
	}, m.NumHiddenLayers, m.PartitionAxis)
}

// ConvDim returns the conv state's channel count, intermediate_size +
// 2 × n_groups × state_size: the conv runs over the concatenated x, B and C.
func (m Metadata) ConvDim() int { return m.IntermediateSize + 2*m.NGroups*m.StateSize }

// stateShapes returns the shapes of the conv state (B, conv_dim,
// conv_kernel_size) and of the SSM state (B, num_heads, head_dim,
// state_size).
func (m Metadata) stateShapes() (conv, ssm []int) {
	return []int{m.BatchSize, m.ConvDim(), m.ConvKernelSize}, []int{m.BatchSize, m.NumHeads, m.HeadDim, m.StateSize}
}

// UnmarshalJSON decodes EasyDeL's to_json form; partition_axis is
// compacted, and null becomes nil. It does not validate: call Validate.
func (m *Metadata) UnmarshalJSON(b []byte) error {
	type plain Metadata
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	p.PartitionAxis = rawjson.Compact(p.PartitionAxis)
	*m = Metadata(p)
	return nil
}

// clone returns m with its own copy of PartitionAxis.
func (m Metadata) clone() Metadata {
	m.PartitionAxis = slices.Clone(m.PartitionAxis)
	return m
}
