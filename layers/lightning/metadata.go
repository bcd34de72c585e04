package lightning

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/rawjson"
)

// Metadata describes a lightning (linear attention) cache: EasyDeL's
// LightningCacheMetaData, with its field names as JSON tags so that
// encoding/json reads and writes EasyDeL's to_dict / to_json form. Every
// size is optional (nil is Python's None, null in JSON), as in EasyDeL.
//
// A given size constrains the key_value state (B, H, Dk, Dv): B is
// batch_size; H is key_heads or num_heads and value_heads or num_heads (the
// state has one head axis, so both must agree); Dk is key_dim or head_dim;
// Dv is value_dim or head_dim. A size that stays None is taken from the
// first update.
//
// PartitionAxis is EasyDeL's PartitionAxis in its JSON form, kept verbatim
// and not interpreted here (see package sharding); nil encodes as null.
type Metadata struct {
	PartitionAxis json.RawMessage `json:"partition_axis"`
	BatchSize     *int            `json:"batch_size"`
	NumHeads      *int            `json:"num_heads"`
	HeadDim       *int            `json:"head_dim"`
	KeyHeads      *int            `json:"key_heads"`
	ValueHeads    *int            `json:"value_heads"`
	KeyDim        *int            `json:"key_dim"`
	ValueDim      *int            `json:"value_dim"`
}

// MetadataConfig holds the arguments of EasyDeL's
// LightningCacheMetaData.create; nil is None.
type MetadataConfig struct {
	PartitionAxis json.RawMessage
	BatchSize     *int
	NumHeads      *int
	HeadDim       *int
	KeyHeads      *int
	ValueHeads    *int
	KeyDim        *int
	ValueDim      *int
}

// Ptr returns a pointer to v, for the optional fields of MetadataConfig.
func Ptr[T any](v T) *T { return &v }

// Validate runs NewMetadata's checks.
func (c MetadataConfig) Validate() error {
	_, err := NewMetadata(c)
	return err
}

// NewMetadata returns the metadata for cfg (EasyDeL's
// LightningCacheMetaData.create).
//
// Deviation from EasyDeL: create validates nothing (its docstring promises
// a ValueError it never raises). NewMetadata checks, in field order, that
// every given size is positive ("batch_size must be positive", as the other
// EasyDeL caches word it), then that the resolved key and value heads agree
// and that partition_axis is valid JSON.
func NewMetadata(cfg MetadataConfig) (Metadata, error) {
	m := Metadata(cfg).clone()
	if err := m.Validate(); err != nil {
		return Metadata{}, err
	}
	m.PartitionAxis = rawjson.Compact(m.PartitionAxis)
	return m, nil
}

// Validate checks what NewMetadata checks, in the same order. Decoders
// (snapshots, JSON) use it on metadata they did not build.
func (m Metadata) Validate() error {
	for _, f := range []struct {
		name string
		v    *int
	}{
		{"batch_size", m.BatchSize},
		{"num_heads", m.NumHeads},
		{"head_dim", m.HeadDim},
		{"key_heads", m.KeyHeads},
		{"value_heads", m.ValueHeads},
		{"key_dim", m.KeyDim},
		{"value_dim", m.ValueDim},
	} {
		if f.v != nil && *f.v <= 0 {
			return fmt.Errorf("%w: %s must be positive (got %d)", ErrMetadata, f.name, *f.v)
		}
	}
	kh, vh := or(m.KeyHeads, m.NumHeads), or(m.ValueHeads, m.NumHeads)
	if kh != 0 && vh != 0 && kh != vh {
		return fmt.Errorf("%w: key heads %d and value heads %d differ (the key_value state has one head axis)", ErrMetadata, kh, vh)
	}
	return rawjson.Check(ErrMetadata, "partition_axis", m.PartitionAxis)
}

// StateShape returns the key_value shape (B, H, Dk, Dv) the metadata
// prescribes; a size the metadata leaves as None is 0.
func (m Metadata) StateShape() [4]int {
	return [4]int{or(m.BatchSize, nil), or(m.KeyHeads, m.NumHeads), or(m.KeyDim, m.HeadDim), or(m.ValueDim, m.HeadDim)}
}

// or is Python's `a or b` on optional positive sizes; 0 means None.
func or(a, b *int) int {
	switch {
	case a != nil:
		return *a
	case b != nil:
		return *b
	}
	return 0
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

// clone returns m with its own copies of the optional fields.
func (m Metadata) clone() Metadata {
	m.PartitionAxis = slices.Clone(m.PartitionAxis)
	for _, p := range []**int{&m.BatchSize, &m.NumHeads, &m.HeadDim, &m.KeyHeads, &m.ValueHeads, &m.KeyDim, &m.ValueDim} {
		if *p != nil {
			v := **p
			*p = &v
		}
	}
	return m
}
