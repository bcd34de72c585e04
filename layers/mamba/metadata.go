package mamba

import (
	"encoding/json"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/internal/rawjson"
)

// Metadata describes a Mamba (v1) state cache: EasyDeL's MambaCacheMetaData,
// with its field names as JSON tags so that encoding/json reads and writes
// EasyDeL's to_dict / to_json form.
//
// PartitionAxis is EasyDeL's PartitionAxis in its JSON form, kept verbatim
// and not interpreted here: View.Specs takes a sharding.PartitionAxis from
// the caller; nil encodes as null.
type Metadata struct {
	NumHiddenLayers  int             `json:"num_hidden_layers"`
	PartitionAxis    json.RawMessage `json:"partition_axis"`
	BatchSize        int             `json:"batch_size"`
	IntermediateSize int             `json:"intermediate_size"`
	SSMStateSize     int             `json:"ssm_state_size"`
	ConvKernelSize   int             `json:"conv_kernel_size"`
}

// MetadataConfig holds the arguments of EasyDeL's MambaCacheMetaData.create.
type MetadataConfig struct {
	NumHiddenLayers  int
	PartitionAxis    json.RawMessage
	BatchSize        int
	IntermediateSize int
	SSMStateSize     int
	ConvKernelSize   int
}

// Validate runs NewMetadata's checks.
func (c MetadataConfig) Validate() error {
	_, err := NewMetadata(c)
	return err
}

// NewMetadata validates cfg as EasyDeL's MambaCacheMetaData.create does:
// batch_size, intermediate_size, ssm_state_size and conv_kernel_size must be
// positive, checked in that order, each failure reported with EasyDeL's
// message ("batch_size must be positive") and the value.
//
// Deviation from EasyDeL: after EasyDeL's checks, a negative
// num_hidden_layers (EasyDeL does not check it) and a partition_axis that is
// not valid JSON are errors too.
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
		{"ssm_state_size", m.SSMStateSize},
		{"conv_kernel_size", m.ConvKernelSize},
	}, m.NumHiddenLayers, m.PartitionAxis)
}

// stateShapes returns the shapes of the conv state (B, intermediate_size,
// conv_kernel_size) and of the SSM state (B, intermediate_size,
// ssm_state_size).
func (m Metadata) stateShapes() (conv, ssm []int) {
	return []int{m.BatchSize, m.IntermediateSize, m.ConvKernelSize}, []int{m.BatchSize, m.IntermediateSize, m.SSMStateSize}
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
