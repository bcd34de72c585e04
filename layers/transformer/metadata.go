package transformer

import "fmt"

// Metadata describes a transformer KV cache: EasyDeL's
// TransformerCacheMetaData, with its field names as JSON tags so that
// encoding/json reads and writes EasyDeL's to_dict / to_json form.
//
// NumHeads and HeadDim are optional (null in JSON), as in EasyDeL; KeyHeads,
// ValueHeads, KeyDim and ValueDim are the resolved values NewMetadata stores.
// UpdateCausalMask and CreateAttentionBias are stored but unused, as in
// EasyDeL.
type Metadata struct {
	BatchSize           int  `json:"batch_size"`
	SequenceLength      int  `json:"sequence_length"`
	NumHiddenLayers     int  `json:"num_hidden_layers"`
	PadTokenID          int  `json:"pad_token_id"`
	NumHeads            *int `json:"num_heads"`
	HeadDim             *int `json:"head_dim"`
	KeyHeads            int  `json:"key_heads"`
	ValueHeads          int  `json:"value_heads"`
	KeyDim              int  `json:"key_dim"`
	ValueDim            int  `json:"value_dim"`
	UpdateCausalMask    bool `json:"update_causal_mask"`
	CreateAttentionBias bool `json:"create_attention_bias"`
}

// MetadataConfig holds the arguments of EasyDeL's
// TransformerCacheMetaData.create. A nil pointer is Python's None; a pointer
// to 0 is a given value that Python's `or` treats as missing when resolving
// key/value heads and dims (key_dim = key_dim or head_dim). nil flags mean
// EasyDeL's default, true.
type MetadataConfig struct {
	BatchSize           int
	SequenceLength      int
	NumHiddenLayers     int
	PadTokenID          int
	NumHeads            *int
	HeadDim             *int
	KeyHeads            *int
	ValueHeads          *int
	KeyDim              *int
	ValueDim            *int
	UpdateCausalMask    *bool
	CreateAttentionBias *bool
}

// Ptr returns a pointer to v, for the optional fields of MetadataConfig.
func Ptr[T any](v T) *T { return &v }

// or is Python's `a or b` on optional ints: a unless it is None or 0.
func or(a, b *int) *int {
	if a != nil && *a != 0 {
		return a
	}
	return b
}

// resolve runs EasyDeL's create checks and resolution, then ours.
func (c MetadataConfig) resolve() (Metadata, error) {
	if c.BatchSize <= 0 {
		return Metadata{}, fmt.Errorf("%w: batch_size must be positive (got %d)", ErrMetadata, c.BatchSize)
	}
	if c.SequenceLength <= 0 {
		return Metadata{}, fmt.Errorf("%w: sequence_length must be positive (got %d)", ErrMetadata, c.SequenceLength)
	}
	keyDim, valueDim := c.KeyDim, c.ValueDim
	if c.HeadDim != nil {
		keyDim, valueDim = or(keyDim, c.HeadDim), or(valueDim, c.HeadDim)
	} else if keyDim == nil || valueDim == nil {
		return Metadata{}, fmt.Errorf("%w: Either head_dim or both key_dim and value_dim must be specified (key_dim=%s, value_dim=%s)",
			ErrMetadata, optString(keyDim), optString(valueDim))
	}
	keyHeads, valueHeads := c.KeyHeads, c.ValueHeads
	if c.NumHeads != nil {
		keyHeads, valueHeads = or(keyHeads, c.NumHeads), or(valueHeads, c.NumHeads)
	} else if keyHeads == nil || valueHeads == nil {
		return Metadata{}, fmt.Errorf("%w: Either num_heads or both key_heads and value_heads must be specified (key_heads=%s, value_heads=%s)",
			ErrMetadata, optString(keyHeads), optString(valueHeads))
	}
	m := Metadata{
		BatchSize:           c.BatchSize,
		SequenceLength:      c.SequenceLength,
		NumHiddenLayers:     c.NumHiddenLayers,
		PadTokenID:          c.PadTokenID,
		NumHeads:            clonePtr(c.NumHeads),
		HeadDim:             clonePtr(c.HeadDim),
		KeyHeads:            *keyHeads,
		ValueHeads:          *valueHeads,
		KeyDim:              *keyDim,
		ValueDim:            *valueDim,
		UpdateCausalMask:    c.UpdateCausalMask == nil || *c.UpdateCausalMask,
		CreateAttentionBias: c.CreateAttentionBias == nil || *c.CreateAttentionBias,
	}
	if err := m.Validate(); err != nil {
		return Metadata{}, err
	}
	return m, nil
}

// Validate runs EasyDeL's create checks (steps 1 to 4 of spec section 6.1,
// in that order, with EasyDeL's messages) and then kvmesh's additional
// checks on the resolved values.
func (c MetadataConfig) Validate() error {
	_, err := c.resolve()
	return err
}

// NewMetadata validates cfg and resolves the key/value heads and dims as
// EasyDeL's TransformerCacheMetaData.create does: key_dim = key_dim or
// head_dim, value_dim = value_dim or head_dim, key_heads = key_heads or
// num_heads, value_heads = value_heads or num_heads. Errors come in EasyDeL's
// order with EasyDeL's messages: batch_size, sequence_length, head dims, head
// counts.
//
// Deviation from EasyDeL: after EasyDeL's checks, a negative
// num_hidden_layers and a non-positive resolved key_heads, value_heads,
// key_dim or value_dim are errors too (EasyDeL accepts them and fails later,
// or builds an empty cache). pad_token_id is not checked, as in EasyDeL.
func NewMetadata(cfg MetadataConfig) (Metadata, error) { return cfg.resolve() }

// Validate checks the invariants of resolved metadata: positive batch size,
// sequence length, key/value heads and dims, and a non-negative number of
// layers. It is what NewMetadata checks after EasyDeL's checks, and what
// decoders (FromPure, snapshots) check on metadata they did not build.
func (m Metadata) Validate() error {
	switch {
	case m.BatchSize <= 0:
		return fmt.Errorf("%w: batch_size must be positive (got %d)", ErrMetadata, m.BatchSize)
	case m.SequenceLength <= 0:
		return fmt.Errorf("%w: sequence_length must be positive (got %d)", ErrMetadata, m.SequenceLength)
	case m.NumHiddenLayers < 0:
		return fmt.Errorf("%w: num_hidden_layers must not be negative (got %d)", ErrMetadata, m.NumHiddenLayers)
	case m.KeyHeads <= 0:
		return fmt.Errorf("%w: key_heads must be positive (got %d)", ErrMetadata, m.KeyHeads)
	case m.ValueHeads <= 0:
		return fmt.Errorf("%w: value_heads must be positive (got %d)", ErrMetadata, m.ValueHeads)
	case m.KeyDim <= 0:
		return fmt.Errorf("%w: key_dim must be positive (got %d)", ErrMetadata, m.KeyDim)
	case m.ValueDim <= 0:
		return fmt.Errorf("%w: value_dim must be positive (got %d)", ErrMetadata, m.ValueDim)
	}
	return nil
}

// equal reports whether two metadata values are the same, pointers compared
// by value.
func (m Metadata) equal(o Metadata) bool {
	a, b := m, o
	a.NumHeads, a.HeadDim, b.NumHeads, b.HeadDim = nil, nil, nil, nil
	return a == b && eqPtr(m.NumHeads, o.NumHeads) && eqPtr(m.HeadDim, o.HeadDim)
}

// clone returns m with its own copies of the optional fields, so that no
// caller can change a view's metadata through a shared pointer.
func (m Metadata) clone() Metadata {
	m.NumHeads, m.HeadDim = clonePtr(m.NumHeads), clonePtr(m.HeadDim)
	return m
}

func eqPtr(a, b *int) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func clonePtr(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func optString(p *int) string {
	if p == nil {
		return "None"
	}
	return fmt.Sprint(*p)
}
