package paged

import (
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Metadata describes a paged KV cache: EasyDeL's PagedAttentionCacheMetaData
// (spec section 7.1). Its JSON form uses EasyDeL's field names and is
// lossless. Build it with NewMetadata; a literal must pass Validate before
// NewView or Init accept it.
type Metadata struct {
	// BatchSize is the number of concurrent decode slots.
	BatchSize int `json:"batch_size"`
	// NumHiddenLayers is the number of attention layers; each has its own
	// page pool with the same page indices.
	NumHiddenLayers int `json:"num_hidden_layers"`
	// NumPagesPerLayer is the size N of each layer's page pool, page 0
	// (the dummy page) included.
	NumPagesPerLayer int `json:"num_pages_per_layer"`
	// NumPagesPerSequence is P = ceil(MaxSequences / PageSize), the
	// length of a sequence's page table.
	NumPagesPerSequence int `json:"num_pages_per_sequence"`
	// MaxSequences is, despite its name, the maximum sequence length in
	// tokens (EasyDeL's naming).
	MaxSequences int `json:"max_sequences"`
	// PageSize is the number of tokens per page.
	PageSize int `json:"page_size"`
	// NumKVHeads is the number of key/value heads.
	NumKVHeads int `json:"num_kv_heads"`
	// KVHeadDimSize is the head dimension D of keys and values.
	KVHeadDimSize int `json:"kv_head_dim_size"`
	// HBMUtilization is the fraction of the reservable device memory the
	// page pools may use, in (0, 1).
	HBMUtilization float64 `json:"hbm_utilization"`
}

// Validate checks that every field is in range and that
// NumPagesPerSequence is ceil(MaxSequences/PageSize). Page indices are
// int32, so NumPagesPerLayer is at most math.MaxInt32; it is at least 2,
// because page 0 is reserved.
func (m Metadata) Validate() error {
	if err := checkFields(m.HBMUtilization,
		field{"batch_size", m.BatchSize},
		field{"num_hidden_layers", m.NumHiddenLayers},
		field{"num_pages_per_layer", m.NumPagesPerLayer},
		field{"num_pages_per_sequence", m.NumPagesPerSequence},
		field{"max_sequences", m.MaxSequences},
		field{"page_size", m.PageSize},
		field{"num_kv_heads", m.NumKVHeads},
		field{"kv_head_dim_size", m.KVHeadDimSize},
	); err != nil {
		return err
	}
	if m.NumPagesPerLayer < 2 || m.NumPagesPerLayer > math.MaxInt32 {
		return fmt.Errorf("%w: `num_pages_per_layer` is %d, want 2..%d (page 0 is reserved; page indices are int32)",
			ErrInvalidMetadata, m.NumPagesPerLayer, math.MaxInt32)
	}
	if want := ceilDiv(m.MaxSequences, m.PageSize); m.NumPagesPerSequence != want {
		return fmt.Errorf("%w: `num_pages_per_sequence` is %d, want ceil(max_sequences %d / page_size %d) = %d",
			ErrInvalidMetadata, m.NumPagesPerSequence, m.MaxSequences, m.PageSize, want)
	}
	return nil
}

// field is an integer field to validate, by its EasyDeL name.
type field struct {
	name string
	v    int
}

// checkFields checks, in order, that each field is positive and then that
// util is in (0, 1), with EasyDeL's messages.
func checkFields(util float64, fields ...field) error {
	for _, f := range fields {
		if f.v <= 0 {
			return fmt.Errorf("%w: `%s` must be positive, got %d", ErrInvalidMetadata, f.name, f.v)
		}
	}
	if !(util > 0 && util < 1) {
		return fmt.Errorf("%w: `hbm_utilization` must be positive float value in range 0~1, got %v", ErrInvalidMetadata, util)
	}
	return nil
}

// MemoryStats is the memory state of one device, as JAX's
// Device.memory_stats() reports it.
type MemoryStats struct {
	// BytesReservableLimit is the number of bytes the process may reserve.
	BytesReservableLimit int64
	// BytesInUse is the number of bytes already in use.
	BytesInUse int64
}

// MemorySource reports the memory state of the device the page pools are
// budgeted against. EasyDeL always reads local device 0's stats, which
// fails on some TPU pods (EasyDeL issue #181); kvmesh takes the source as
// a parameter instead.
type MemorySource interface {
	MemoryStats() (MemoryStats, error)
}

// StaticMemory is a MemorySource that always reports the same stats: for
// tests, CPU runs and callers that know their budget.
type StaticMemory MemoryStats

// MemoryStats returns s.
func (s StaticMemory) MemoryStats() (MemoryStats, error) { return MemoryStats(s), nil }

// MetadataConfig holds the arguments of EasyDeL's
// PagedAttentionCacheMetaData.create.
type MetadataConfig struct {
	// BatchSize is the number of concurrent decode slots.
	BatchSize int
	// NumHiddenLayers is the number of attention layers.
	NumHiddenLayers int
	// MaxSequences is the maximum sequence length in tokens.
	MaxSequences int
	// PageSize is the number of tokens per page.
	PageSize int
	// NumKVHeads is the number of key/value heads.
	NumKVHeads int
	// KVHeadDimSize is the head dimension of keys and values.
	KVHeadDimSize int
	// HBMUtilization is the fraction of the reservable memory to budget,
	// in (0, 1), both ends exclusive.
	HBMUtilization float64
	// DType is the KV storage dtype; its size sets the bytes per page.
	DType tensor.DType
	// HeadShards is the size of the mesh axis the kv heads are sharded
	// over (EasyDeL's mesh.shape[head_sharding]); 0 means 1. If it does
	// not divide NumKVHeads, the budget uses 1, as EasyDeL does (EasyDeL
	// logs a warning; kvmesh falls back silently).
	HeadShards int
	// Memory reports the device's memory state.
	Memory MemorySource
}

// Validate checks the config in EasyDeL's order and with its messages
// (batch_size, num_hidden_layers, max_sequences, page_size, num_kv_heads,
// kv_head_dim_size, hbm_utilization), then kvmesh's additions: a nil
// Memory, an invalid DType and a negative HeadShards.
func (c MetadataConfig) Validate() error {
	if err := checkFields(c.HBMUtilization,
		field{"batch_size", c.BatchSize},
		field{"num_hidden_layers", c.NumHiddenLayers},
		field{"max_sequences", c.MaxSequences},
		field{"page_size", c.PageSize},
		field{"num_kv_heads", c.NumKVHeads},
		field{"kv_head_dim_size", c.KVHeadDimSize},
	); err != nil {
		return err
	}
	if c.Memory == nil {
		return fmt.Errorf("%w: no memory source", ErrInvalidMetadata)
	}
	if !c.DType.Valid() {
		return fmt.Errorf("%w: dtype %d is not a supported KV dtype", ErrInvalidMetadata, c.DType)
	}
	if c.HeadShards < 0 {
		return fmt.Errorf("%w: head shards %d is negative (0 means 1)", ErrInvalidMetadata, c.HeadShards)
	}
	return nil
}

// maxPoolBytes bounds the bytes of one page across all layers, K and V,
// so that the budget arithmetic cannot overflow int64.
const maxPoolBytes = 1 << 61

// NewMetadata computes the page budget as EasyDeL's create does (spec
// section 7.1):
//
//	usable   = int(limit * hbm_utilization) - in_use            (one device)
//	hbm      = usable * shards                                   (all head shards)
//	per_kv   = num_kv_heads * kv_head_dim_size * itemsize * 2    (K and V)
//	N        = (hbm // num_hidden_layers) // (page_size * per_kv)
//	P        = ceil(max_sequences / page_size)
//
// Deviations: a negative usable budget is an error (EasyDeL returns a
// negative page count), and so is a budget of fewer than 2 pages per layer
// (page 0 is the reserved dummy page, so such a pool could hold nothing);
// both errors wrap ErrBudget and give the numbers.
func NewMetadata(cfg MetadataConfig) (Metadata, error) {
	if err := cfg.Validate(); err != nil {
		return Metadata{}, err
	}
	stats, err := cfg.Memory.MemoryStats()
	if err != nil {
		return Metadata{}, fmt.Errorf("%w: %w", ErrMemory, err)
	}
	if stats.BytesReservableLimit < 0 || stats.BytesInUse < 0 {
		return Metadata{}, fmt.Errorf("%w: reservable limit %d and in use %d bytes must not be negative",
			ErrMemory, stats.BytesReservableLimit, stats.BytesInUse)
	}
	shards := max(cfg.HeadShards, 1)
	if cfg.NumKVHeads%shards != 0 {
		shards = 1
	}
	pageBytesAll := float64(cfg.PageSize) * float64(cfg.NumKVHeads) * float64(cfg.KVHeadDimSize) *
		float64(cfg.DType.Size()) * 2 * float64(cfg.NumHiddenLayers)
	if pageBytesAll > maxPoolBytes {
		return Metadata{}, fmt.Errorf("%w: one page of %d tokens x %d heads x %d dims x %d layers needs more than 2^61 bytes",
			ErrInvalidMetadata, cfg.PageSize, cfg.NumKVHeads, cfg.KVHeadDimSize, cfg.NumHiddenLayers)
	}
	budget := int64(float64(stats.BytesReservableLimit) * cfg.HBMUtilization)
	usable := budget - stats.BytesInUse
	if usable < 0 {
		return Metadata{}, fmt.Errorf("%w: usable memory per device is negative: int(%d * %v) - %d in use = %d bytes",
			ErrBudget, stats.BytesReservableLimit, cfg.HBMUtilization, stats.BytesInUse, usable)
	}
	perKV := int64(cfg.NumKVHeads) * int64(cfg.KVHeadDimSize) * int64(cfg.DType.Size()) * 2
	pageBytes := int64(cfg.PageSize) * perKV
	// usable*shards fits in int64 only if usable <= MaxInt64/shards; a
	// larger budget exceeds the int32 page range, an error below.
	var pages int64
	if usable > math.MaxInt64/int64(shards) {
		pages = math.MaxInt64
	} else {
		hbm := usable * int64(shards)
		pages = hbm / int64(cfg.NumHiddenLayers) / pageBytes
	}
	if pages < 2 {
		need := 2 * pageBytes * int64(cfg.NumHiddenLayers)
		perDevice := (need + int64(shards) - 1) / int64(shards)
		return Metadata{}, fmt.Errorf("%w: %d usable bytes per device (int(%d * %v) - %d in use) x %d head shards give %d pages per layer "+
			"of %d bytes over %d layers; page 0 is reserved, so at least 2 pages per layer are needed: %d usable bytes per device",
			ErrBudget, usable, stats.BytesReservableLimit, cfg.HBMUtilization, stats.BytesInUse, shards, pages,
			pageBytes, cfg.NumHiddenLayers, perDevice)
	}
	if pages > math.MaxInt32 {
		return Metadata{}, fmt.Errorf("%w: the budget gives %d pages per layer, more than the int32 page-index range %d",
			ErrInvalidMetadata, pages, math.MaxInt32)
	}
	m := Metadata{
		BatchSize:           cfg.BatchSize,
		NumHiddenLayers:     cfg.NumHiddenLayers,
		NumPagesPerLayer:    int(pages),
		NumPagesPerSequence: ceilDiv(cfg.MaxSequences, cfg.PageSize),
		MaxSequences:        cfg.MaxSequences,
		PageSize:            cfg.PageSize,
		NumKVHeads:          cfg.NumKVHeads,
		KVHeadDimSize:       cfg.KVHeadDimSize,
		HBMUtilization:      cfg.HBMUtilization,
	}
	return m, nil
}

// ceilDiv returns ceil(a/b) for b > 0, without overflow; 0 for a <= 0.
func ceilDiv(a, b int) int {
	if a <= 0 {
		return 0
	}
	return (a-1)/b + 1
}
