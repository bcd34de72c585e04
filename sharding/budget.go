package sharding

import (
	"fmt"
	"math"
	"strings"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// int32Size is the size of the int32 index arrays the caches keep.
const int32Size = 4

// The semantic axes of each cache tensor (spec section 5). Each function
// returns a fresh slice; resolve them with ModePrefill (a non-generation
// mode, as EasyDeL does at init) and Correct them for the tensor's shape.

// TransformerKVAxes returns the axes of a contiguous cache's key and
// value, shape (B, S, H, D): [Batch, KVLength, KVHead, KVHeadDim].
func TransformerKVAxes() []string { return []string{Batch, KVLength, KVHead, KVHeadDim} }

// TransformerIndexAxes returns the axes of a contiguous cache's index and
// starts, shape (B,): [Batch].
func TransformerIndexAxes() []string { return []string{Batch} }

// PagedPageAxes returns the axes of a paged cache's key and value pages,
// shape (Hkv, pages, page_size, D): [Head, Empty, Empty, Empty], so kv
// heads are sharded over the head axis (tp).
func PagedPageAxes() []string { return []string{Head, Empty, Empty, Empty} }

// RecurrentStateAxes returns the axes of the Mamba and Mamba2 conv and SSM
// states: [Batch, Head, Length], EasyDeL's default
// PartitionSpec(batch_axis, head_axis, sequence_axis). Correct pads it with
// None for the rank-4 Mamba2 SSM state.
func RecurrentStateAxes() []string { return []string{Batch, Head, Length} }

// LightningStateAxes returns the axes of the lightning key_value state,
// shape (B, H, Dk, Dv): [Batch, Head, Empty, Empty].
func LightningStateAxes() []string { return []string{Batch, Head, Empty, Empty} }

// Layout is one kind of tensor that a cache keeps: Count tensors of the
// same shape, element size and semantic axes (for example one key tensor
// per layer).
type Layout struct {
	// Name says what the tensor is ("key", "value", "index", ...).
	Name string
	// Shape is the tensor's full (unsharded) shape.
	Shape []int
	// ItemSize is the size of one element in bytes.
	ItemSize int
	// Axes are the semantic axes of the tensor, resolved with ModePrefill.
	Axes []string
	// Count is the number of such tensors.
	Count int
}

// CacheShape is a cache kind's sizes: it lists the tensors the cache keeps.
// TransformerShape, PagedShape, MambaShape, Mamba2Shape and LightningShape
// implement it.
type CacheShape interface {
	// Kind names the cache kind ("transformer", "paged", ...).
	Kind() string
	// Layouts validates the sizes and returns the cache's tensors.
	Layouts() ([]Layout, error)
}

// mul returns a*b, or an error when it overflows int64.
func mul(a, b int64) (int64, error) {
	if a != 0 && b > math.MaxInt64/a {
		return 0, fmt.Errorf("%w: %d x %d bytes overflow int64", ErrShape, a, b)
	}
	return a * b, nil
}

// shardBytes returns the bytes one device holds of a tensor of shape with
// itemSize-byte elements under spec.
func shardBytes(shape []int, itemSize int, spec Spec, mesh Mesh) (int64, error) {
	blocks, err := checkSpec(shape, spec, mesh)
	if err != nil {
		return 0, err
	}
	n := int64(itemSize)
	for d, x := range shape {
		if n, err = mul(n, int64(x/blocks[d])); err != nil {
			return 0, fmt.Errorf("shape %v: %w", shape, err)
		}
	}
	return n, nil
}

// ShardBytes returns the bytes that each device holds of a tensor of the
// given shape and dtype under spec on mesh (every device holds a slice of
// the same size). The spec must fit as it stands (see ShardSlices).
func ShardBytes(shape []int, dtype tensor.DType, spec Spec, mesh Mesh) (int64, error) {
	if !dtype.Valid() {
		return 0, fmt.Errorf("%w: dtype %d is not a supported dtype", ErrShape, dtype)
	}
	return shardBytes(shape, dtype.Size(), spec, mesh)
}

// LayoutBytes returns the bytes per device of l's Count tensors: each one's
// axes resolved with pa in ModePrefill, corrected for its shape on mesh.
func LayoutBytes(l Layout, pa PartitionAxis, mesh Mesh) (int64, error) {
	if l.ItemSize <= 0 || l.Count < 0 {
		return 0, fmt.Errorf("%w: %s has item size %d and count %d, want > 0 and >= 0", ErrShape, l.Name, l.ItemSize, l.Count)
	}
	spec, err := ResolveFor(pa, l.Axes, ModePrefill, l.Shape, mesh)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.Name, err)
	}
	one, err := shardBytes(l.Shape, l.ItemSize, spec, mesh)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.Name, err)
	}
	n, err := mul(one, int64(l.Count))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", l.Name, err)
	}
	return n, nil
}

// BytesPerDevice returns the bytes each device of mesh holds of cache c,
// with its tensors sharded by pa (spec section 5).
func BytesPerDevice(c CacheShape, pa PartitionAxis, mesh Mesh) (int64, error) {
	ls, err := c.Layouts()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, l := range ls {
		n, err := LayoutBytes(l, pa, mesh)
		if err != nil {
			return 0, fmt.Errorf("%s cache: %w", c.Kind(), err)
		}
		if total > math.MaxInt64-n {
			return 0, fmt.Errorf("%w: %s cache bytes overflow int64", ErrShape, c.Kind())
		}
		total += n
	}
	return total, nil
}

// CheckBudget returns BytesPerDevice and checks that every device's
// MemoryBytes holds it. A device too small gives an error wrapping
// ErrBudget that names the smallest device, the bytes needed and the
// shortfall.
func CheckBudget(c CacheShape, pa PartitionAxis, mesh Mesh) (int64, error) {
	need, err := BytesPerDevice(c, pa, mesh)
	if err != nil {
		return 0, err
	}
	small := -1
	for i, d := range mesh.devices {
		if small < 0 || d.MemoryBytes < mesh.devices[small].MemoryBytes {
			small = i
		}
	}
	if small >= 0 && mesh.devices[small].MemoryBytes < need {
		d := mesh.devices[small]
		parts, _ := describe(c, pa, mesh) // cannot fail: BytesPerDevice succeeded
		return need, fmt.Errorf("%w: the %s cache needs %d bytes per device on %s (%s); device %d (id %d) has %d bytes: short by %d bytes",
			ErrBudget, c.Kind(), need, mesh, parts, small, d.ID, d.MemoryBytes, need-d.MemoryBytes)
	}
	return need, nil
}

// positive checks named sizes in order, and the dtype.
func positive(kind string, dtype tensor.DType, fields ...field) error {
	for _, f := range fields {
		if f.v <= 0 {
			return fmt.Errorf("%w: %s cache: %s is %d, want > 0", ErrShape, kind, f.name, f.v)
		}
	}
	if !dtype.Valid() {
		return fmt.Errorf("%w: %s cache: dtype %d is not a supported dtype", ErrShape, kind, dtype)
	}
	return nil
}

// field is a named size, by its EasyDeL name.
type field struct {
	name string
	v    int
}

// TransformerShape sizes a contiguous KV cache (EasyDeL TransformerCache):
// per layer a key (B, S, KeyHeads, KeyDim), a value (B, S, ValueHeads,
// ValueDim) and int32 index and starts (B,).
type TransformerShape struct {
	// NumHiddenLayers is the number of layers (views).
	NumHiddenLayers int
	// BatchSize is B.
	BatchSize int
	// SequenceLength is S, the positions per row.
	SequenceLength int
	// KeyHeads and KeyDim size the key.
	KeyHeads, KeyDim int
	// ValueHeads and ValueDim size the value.
	ValueHeads, ValueDim int
	// DType is the key and value dtype.
	DType tensor.DType
}

// Kind returns "transformer".
func (s TransformerShape) Kind() string { return "transformer" }

// Layouts returns the key, value, index and starts layouts.
func (s TransformerShape) Layouts() ([]Layout, error) {
	if err := positive(s.Kind(), s.DType, field{"num_hidden_layers", s.NumHiddenLayers}, field{"batch_size", s.BatchSize},
		field{"sequence_length", s.SequenceLength}, field{"key_heads", s.KeyHeads}, field{"key_dim", s.KeyDim},
		field{"value_heads", s.ValueHeads}, field{"value_dim", s.ValueDim}); err != nil {
		return nil, err
	}
	l := s.NumHiddenLayers
	return []Layout{
		{"key", []int{s.BatchSize, s.SequenceLength, s.KeyHeads, s.KeyDim}, s.DType.Size(), TransformerKVAxes(), l},
		{"value", []int{s.BatchSize, s.SequenceLength, s.ValueHeads, s.ValueDim}, s.DType.Size(), TransformerKVAxes(), l},
		{"index", []int{s.BatchSize}, int32Size, TransformerIndexAxes(), l},
		{"starts", []int{s.BatchSize}, int32Size, TransformerIndexAxes(), l},
	}, nil
}

// PagedShape sizes a paged KV cache (EasyDeL PagedAttentionCache): per
// layer key and value pages (NumKVHeads, NumPagesPerLayer, PageSize,
// KVHeadDimSize).
type PagedShape struct {
	// NumHiddenLayers is the number of layers.
	NumHiddenLayers int
	// NumPagesPerLayer is the pool size, page 0 included.
	NumPagesPerLayer int
	// PageSize is the number of tokens per page.
	PageSize int
	// NumKVHeads is the number of key/value heads.
	NumKVHeads int
	// KVHeadDimSize is the head dimension.
	KVHeadDimSize int
	// DType is the page dtype.
	DType tensor.DType
}

// Kind returns "paged".
func (s PagedShape) Kind() string { return "paged" }

// Layouts returns the key-page and value-page layouts.
func (s PagedShape) Layouts() ([]Layout, error) {
	if err := positive(s.Kind(), s.DType, field{"num_hidden_layers", s.NumHiddenLayers}, field{"num_pages_per_layer", s.NumPagesPerLayer},
		field{"page_size", s.PageSize}, field{"num_kv_heads", s.NumKVHeads}, field{"kv_head_dim_size", s.KVHeadDimSize}); err != nil {
		return nil, err
	}
	shape := []int{s.NumKVHeads, s.NumPagesPerLayer, s.PageSize, s.KVHeadDimSize}
	return []Layout{
		{"key_pages", shape, s.DType.Size(), PagedPageAxes(), s.NumHiddenLayers},
		{"value_pages", shape, s.DType.Size(), PagedPageAxes(), s.NumHiddenLayers},
	}, nil
}

// MambaShape sizes a Mamba cache (EasyDeL MambaCache): per layer a conv
// state (B, I, K), an SSM state (B, I, N) and int32 positions (B,).
type MambaShape struct {
	// NumHiddenLayers is the number of layers.
	NumHiddenLayers int
	// BatchSize is B.
	BatchSize int
	// IntermediateSize is I.
	IntermediateSize int
	// SSMStateSize is N.
	SSMStateSize int
	// ConvKernelSize is K.
	ConvKernelSize int
	// DType is the state dtype.
	DType tensor.DType
}

// Kind returns "mamba".
func (s MambaShape) Kind() string { return "mamba" }

// Layouts returns the conv, SSM and positions layouts. Positions are
// sharded over the batch (kvmesh's choice; EasyDeL does not say).
func (s MambaShape) Layouts() ([]Layout, error) {
	if err := positive(s.Kind(), s.DType, field{"num_hidden_layers", s.NumHiddenLayers}, field{"batch_size", s.BatchSize},
		field{"intermediate_size", s.IntermediateSize}, field{"ssm_state_size", s.SSMStateSize},
		field{"conv_kernel_size", s.ConvKernelSize}); err != nil {
		return nil, err
	}
	l := s.NumHiddenLayers
	return []Layout{
		{"conv_states", []int{s.BatchSize, s.IntermediateSize, s.ConvKernelSize}, s.DType.Size(), RecurrentStateAxes(), l},
		{"ssm_states", []int{s.BatchSize, s.IntermediateSize, s.SSMStateSize}, s.DType.Size(), RecurrentStateAxes(), l},
		{"positions", []int{s.BatchSize}, int32Size, TransformerIndexAxes(), l},
	}, nil
}

// Mamba2Shape sizes a Mamba2 cache (EasyDeL Mamba2Cache): per layer a conv
// state (B, I + 2·G·N, K), an SSM state (B, H, P, N) and int32 positions
// (B,).
type Mamba2Shape struct {
	// NumHiddenLayers is the number of layers.
	NumHiddenLayers int
	// BatchSize is B.
	BatchSize int
	// IntermediateSize is I.
	IntermediateSize int
	// NumHeads is H.
	NumHeads int
	// HeadDim is P.
	HeadDim int
	// StateSize is N.
	StateSize int
	// ConvKernelSize is K.
	ConvKernelSize int
	// NGroups is G.
	NGroups int
	// DType is the state dtype.
	DType tensor.DType
}

// Kind returns "mamba2".
func (s Mamba2Shape) Kind() string { return "mamba2" }

// Layouts returns the conv, SSM and positions layouts.
func (s Mamba2Shape) Layouts() ([]Layout, error) {
	if err := positive(s.Kind(), s.DType, field{"num_hidden_layers", s.NumHiddenLayers}, field{"batch_size", s.BatchSize},
		field{"intermediate_size", s.IntermediateSize}, field{"num_heads", s.NumHeads}, field{"head_dim", s.HeadDim},
		field{"state_size", s.StateSize}, field{"conv_kernel_size", s.ConvKernelSize}, field{"n_groups", s.NGroups}); err != nil {
		return nil, err
	}
	l := s.NumHiddenLayers
	return []Layout{
		{"conv_states", []int{s.BatchSize, s.IntermediateSize + 2*s.NGroups*s.StateSize, s.ConvKernelSize}, s.DType.Size(), RecurrentStateAxes(), l},
		{"ssm_states", []int{s.BatchSize, s.NumHeads, s.HeadDim, s.StateSize}, s.DType.Size(), RecurrentStateAxes(), l},
		{"positions", []int{s.BatchSize}, int32Size, TransformerIndexAxes(), l},
	}, nil
}

// LightningShape sizes a lightning cache (EasyDeL LightningCache): per
// layer a key_value state (B, H, Dk, Dv).
type LightningShape struct {
	// NumHiddenLayers is the number of layers.
	NumHiddenLayers int
	// BatchSize is B.
	BatchSize int
	// NumHeads is H.
	NumHeads int
	// KeyDim is Dk.
	KeyDim int
	// ValueDim is Dv.
	ValueDim int
	// DType is the state dtype.
	DType tensor.DType
}

// Kind returns "lightning".
func (s LightningShape) Kind() string { return "lightning" }

// Layouts returns the key_value layout.
func (s LightningShape) Layouts() ([]Layout, error) {
	if err := positive(s.Kind(), s.DType, field{"num_hidden_layers", s.NumHiddenLayers}, field{"batch_size", s.BatchSize},
		field{"num_heads", s.NumHeads}, field{"key_dim", s.KeyDim}, field{"value_dim", s.ValueDim}); err != nil {
		return nil, err
	}
	return []Layout{
		{"key_value", []int{s.BatchSize, s.NumHeads, s.KeyDim, s.ValueDim}, s.DType.Size(), LightningStateAxes(), s.NumHiddenLayers},
	}, nil
}

// HeadShards returns the number of shards the kv heads of a paged cache
// are split into on mesh: the product of the mesh-axis sizes that pa's
// head axis resolves to, or 1 when that product does not divide
// numKVHeads (in particular when numKVHeads < tp): EasyDeL then
// replicates the pages. A head axis not in the mesh also gives 1 (EasyDeL
// raises a KeyError).
func HeadShards(numKVHeads int, pa PartitionAxis, mesh Mesh) (int, error) {
	if numKVHeads <= 0 {
		return 0, fmt.Errorf("%w: num_kv_heads is %d, want > 0", ErrShape, numKVHeads)
	}
	spec, err := ResolveFor(pa, PagedPageAxes(), ModePrefill, []int{numKVHeads, 1, 1, 1}, mesh)
	if err != nil {
		return 0, err
	}
	n := 1
	for _, a := range spec[0] {
		n *= mesh.Size(a)
	}
	return n, nil
}

// PagedBudgetConfig holds the inputs of EasyDeL's page-budget formula
// that do not come from the mesh.
type PagedBudgetConfig struct {
	// NumHiddenLayers is the number of attention layers.
	NumHiddenLayers int
	// PageSize is the number of tokens per page.
	PageSize int
	// NumKVHeads is the number of key/value heads.
	NumKVHeads int
	// KVHeadDimSize is the head dimension.
	KVHeadDimSize int
	// DType is the page dtype.
	DType tensor.DType
	// HBMUtilization is the fraction of each device's MemoryBytes the
	// pools may use, in (0, 1).
	HBMUtilization float64
	// BytesInUse is the memory already in use on each device.
	BytesInUse int64
}

// PagedBudget is the result of PagedPages.
type PagedBudget struct {
	// PagesPerLayer is num_pages_per_layer, page 0 included.
	PagesPerLayer int
	// HeadShards is the number of shards of the kv heads (HeadShards).
	HeadShards int
	// UsableBytesPerDevice is int(MemoryBytes × HBMUtilization) −
	// BytesInUse on the smallest device.
	UsableBytesPerDevice int64
	// PageBytes is the size of one page of one layer, K and V, all heads:
	// page_size × num_kv_heads × head_dim × itemsize × 2.
	PageBytes int64
	// PoolBytesPerDevice is what the pools take on each device:
	// PagesPerLayer × layers × PageBytes / HeadShards.
	PoolBytesPerDevice int64
}

// PagedPages computes the page count of a paged cache from per-device
// memory, as EasyDeL's PagedAttentionCacheMetaData.create does (spec
// section 7.1, and layers/paged.NewMetadata):
//
//	usable = int(MemoryBytes × HBMUtilization) − BytesInUse     (per device)
//	pages  = (usable × shards // layers) // (page_size × kv_heads × head_dim × itemsize × 2)
//
// where shards = HeadShards(kv_heads, pa, mesh): the pages' kv heads are
// split over the head axis, so the budget of all head shards together
// holds the whole pool.
//
// Deviations: the budget is that of the smallest device (EasyDeL reads
// local device 0 only); a negative usable budget and fewer than 2 pages
// per layer (page 0 is the reserved dummy page) are errors wrapping
// ErrBudget that name the shortfall in bytes (EasyDeL returns the
// count, even negative).
func PagedPages(cfg PagedBudgetConfig, pa PartitionAxis, mesh Mesh) (PagedBudget, error) {
	if err := positive("paged", cfg.DType, field{"num_hidden_layers", cfg.NumHiddenLayers}, field{"page_size", cfg.PageSize},
		field{"num_kv_heads", cfg.NumKVHeads}, field{"kv_head_dim_size", cfg.KVHeadDimSize}); err != nil {
		return PagedBudget{}, err
	}
	if !(cfg.HBMUtilization > 0 && cfg.HBMUtilization < 1) {
		return PagedBudget{}, fmt.Errorf("%w: hbm_utilization is %v, want a value in (0, 1)", ErrShape, cfg.HBMUtilization)
	}
	if cfg.BytesInUse < 0 {
		return PagedBudget{}, fmt.Errorf("%w: bytes in use %d is negative", ErrShape, cfg.BytesInUse)
	}
	if mesh.NumDevices() == 0 {
		return PagedBudget{}, fmt.Errorf("%w: the mesh has no devices (use NewMesh)", ErrMesh)
	}
	shards, err := HeadShards(cfg.NumKVHeads, pa, mesh)
	if err != nil {
		return PagedBudget{}, err
	}
	pageBytes := int64(cfg.PageSize)
	for _, f := range []int64{int64(cfg.NumKVHeads), int64(cfg.KVHeadDimSize), int64(cfg.DType.Size()) * 2} {
		if pageBytes, err = mul(pageBytes, f); err != nil {
			return PagedBudget{}, fmt.Errorf("page bytes: %w", err)
		}
	}
	layerPageBytes, err := mul(pageBytes, int64(cfg.NumHiddenLayers))
	if err != nil {
		return PagedBudget{}, fmt.Errorf("page bytes over %d layers: %w", cfg.NumHiddenLayers, err)
	}
	small := 0
	for i, d := range mesh.devices {
		if d.MemoryBytes < mesh.devices[small].MemoryBytes {
			small = i
		}
	}
	dev := mesh.devices[small]
	usable := int64(float64(dev.MemoryBytes)*cfg.HBMUtilization) - cfg.BytesInUse
	b := PagedBudget{HeadShards: shards, UsableBytesPerDevice: usable, PageBytes: pageBytes}
	if usable < 0 {
		return b, fmt.Errorf("%w: device %d (id %d): int(%d bytes x %v) - %d in use = %d usable bytes: short by %d bytes before any page",
			ErrBudget, small, dev.ID, dev.MemoryBytes, cfg.HBMUtilization, cfg.BytesInUse, usable, -usable)
	}
	var pages int64
	if usable > math.MaxInt64/int64(shards) {
		pages = math.MaxInt64
	} else {
		pages = usable * int64(shards) / int64(cfg.NumHiddenLayers) / pageBytes
	}
	if pages < 2 {
		need := (2*layerPageBytes + int64(shards) - 1) / int64(shards)
		return b, fmt.Errorf("%w: device %d (id %d) has %d usable bytes (int(%d x %v) - %d in use); %d layers x 2 pages "+
			"(page 0 is reserved) of %d bytes over %d head shards need %d bytes per device: short by %d bytes",
			ErrBudget, small, dev.ID, usable, dev.MemoryBytes, cfg.HBMUtilization, cfg.BytesInUse, cfg.NumHiddenLayers,
			pageBytes, shards, need, need-usable)
	}
	if pages > math.MaxInt32 {
		return b, fmt.Errorf("%w: the budget gives %d pages per layer, more than the int32 page-index range %d",
			ErrShape, pages, math.MaxInt32)
	}
	b.PagesPerLayer = int(pages)
	b.PoolBytesPerDevice = pages * layerPageBytes / int64(shards)
	return b, nil
}

// describe lists the layouts of c with their per-device bytes, for
// messages and examples: "key 1024, value 1024, ...".
func describe(c CacheShape, pa PartitionAxis, mesh Mesh) (string, error) {
	ls, err := c.Layouts()
	if err != nil {
		return "", err
	}
	parts := make([]string, len(ls))
	for i, l := range ls {
		n, err := LayoutBytes(l, pa, mesh)
		if err != nil {
			return "", err
		}
		parts[i] = fmt.Sprintf("%s %d", l.Name, n)
	}
	return strings.Join(parts, ", "), nil
}
