package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/sharding"
)

// This file converts between the embedded runtime's Go values (actors.Spec,
// the actors.Write implementations, actors.Result, tensors and masks) and
// their kvmesh.v1 wire form. Every conversion is lossless for what the
// wire can carry; a value it cannot carry is an error wrapping
// actors.ErrInvalid that names the field, never a silent drop. What the
// messages lack (each an error when set):
//
//   - a present but empty TransformerSpec.Starts, PagedSpec.Pool, a Mode
//     that is not one of the four modes, and a PartitionAxis name that is not
//     valid UTF-8 (proto strings are UTF-8); Spec.PartitionAxis, Spec.Mode
//     and the PartitionAxis JSON of Mamba, Mamba2 and lightning metadata
//     travel otherwise unchanged;
//   - a TransformerWrite's Query beyond its batch and length (the only
//     parts ConcatenateToCache reads, which must equal Key's), and a causal
//     mask other than EasyDeL's lower-triangular (1, 1, n, n) one
//     (TransformerWrite.causal is a flag);
//   - an InsertWrite whose slot is outside 0..2³²-1 (its view travels as
//     its snapshot);
//   - a sharded layer's Result.Parts.
//
// Mesh devices are not carried either, but that is not an error: the
// runtime reads only a mesh's axes, and a decoded mesh has devices 0..n-1
// with no memory budget.

// wireErr returns an error wrapping actors.ErrInvalid with a message.
func wireErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", actors.ErrInvalid, fmt.Sprintf(format, args...))
}

// kindErr returns an error for a write whose kind does not match the
// cache's: it wraps actors.ErrInvalid and actors.ErrKind.
func kindErr(write string, spec actors.Spec) error {
	article := "a"
	if strings.ContainsAny(write[:1], "aeiou") {
		article = "an"
	}
	return fmt.Errorf("%w: %w: %s %s write for a %s cache", actors.ErrInvalid, actors.ErrKind, article, write, specKind(spec))
}

// specKind names the kind of cache spec describes.
func specKind(s actors.Spec) string {
	switch {
	case s.Transformer != nil:
		return "transformer"
	case s.Paged != nil:
		return "paged"
	case s.Mamba != nil:
		return "mamba"
	case s.Mamba2 != nil:
		return "mamba2"
	case s.Lightning != nil:
		return "lightning"
	}
	return "kindless"
}

// ---------------------------------------------------------------------------
// Tensors and masks

// tensorToProto returns t's wire form (a copy of its bytes), or nil for the
// zero tensor.
func tensorToProto(t tensor.Tensor) *messages.Tensor {
	if t.IsZero() {
		return nil
	}
	shape := make([]int64, t.Rank())
	for i, d := range t.Shape() {
		shape[i] = int64(d)
	}
	return &messages.Tensor{Dtype: messages.DType(t.DType()), Shape: shape, Data: t.Bytes()}
}

// tensorFromProto returns the tensor t describes, or the zero tensor for
// nil. The tensor takes t.Data over without a copy: t must not be changed
// afterwards (a message unmarshalled from the wire never is). A bad dtype,
// a negative dimension or data of the wrong size is an error wrapping
// actors.ErrInvalid.
func tensorFromProto(t *messages.Tensor) (tensor.Tensor, error) {
	return decodeTensor("tensor", t)
}

// decodeTensor is tensorFromProto with the field name its errors give.
func decodeTensor(field string, t *messages.Tensor) (tensor.Tensor, error) {
	if t == nil {
		return tensor.Tensor{}, nil
	}
	d := tensor.DType(t.Dtype)
	if t.Dtype < 0 || t.Dtype > math.MaxUint8 || !d.Valid() {
		return tensor.Tensor{}, wireErr("%s: dtype %s is not a tensor dtype (want float32, bfloat16, float16, float64, int8 or uint8)", field, t.Dtype)
	}
	shape, n, err := wireShape(field, t.Shape)
	if err != nil {
		return tensor.Tensor{}, err
	}
	if want := n * d.Size(); len(t.Data) != want {
		return tensor.Tensor{}, wireErr("%s: %d bytes of data for a %s tensor of shape %v (want %d)", field, len(t.Data), d, shape, want)
	}
	x, err := tensor.WrapBytes(d, t.Data, shape...)
	if err != nil {
		return tensor.Tensor{}, fmt.Errorf("%w: %s: %w", actors.ErrInvalid, field, err)
	}
	return x, nil
}

// maxWireElements bounds the elements of a decoded tensor or mask, so that
// their byte counts cannot overflow.
const maxWireElements = 1 << 46

// wireShape converts a wire shape and returns its element count; a negative
// dimension or too many elements is an error naming field.
func wireShape(field string, dims []int64) ([]int, int, error) {
	shape := make([]int, len(dims))
	n := 1
	for i, d := range dims {
		if d < 0 {
			return nil, 0, wireErr("%s: dimension %d of shape %v is negative", field, i, dims)
		}
		if d > 0 && int64(n) > maxWireElements/d {
			return nil, 0, wireErr("%s: shape %v has more than %d elements", field, dims, int64(maxWireElements))
		}
		shape[i] = int(d)
		n *= int(d)
	}
	return shape, n, nil
}

// maskToProto returns m's wire form (one byte, 0 or 1, per element), or nil
// for the zero Mask; a mask whose data does not fit its shape is an error
// naming field.
func maskToProto(field string, m transformer.Mask) (*messages.BoolTensor, error) {
	if m.IsZero() {
		return nil, nil
	}
	shape := make([]int64, len(m.Shape))
	n := 1
	for i, d := range m.Shape {
		if d < 0 {
			return nil, wireErr("%s: dimension %d of mask shape %v is negative", field, i, m.Shape)
		}
		shape[i] = int64(d)
		n *= d
	}
	if len(m.Data) != n {
		return nil, wireErr("%s: mask of shape %v holds %d values (want %d)", field, m.Shape, len(m.Data), n)
	}
	data := make([]byte, n)
	for i, b := range m.Data {
		if b {
			data[i] = 1
		}
	}
	return &messages.BoolTensor{Shape: shape, Data: data}, nil
}

// maskFromProto returns the mask b describes, or the zero Mask for nil. A
// present mask always has a non-nil Shape. A negative dimension, data of
// the wrong size or a byte other than 0 and 1 is an error naming field.
func maskFromProto(field string, b *messages.BoolTensor) (transformer.Mask, error) {
	if b == nil {
		return transformer.Mask{}, nil
	}
	shape, n, err := wireShape(field, b.Shape)
	if err != nil {
		return transformer.Mask{}, err
	}
	if len(b.Data) != n {
		return transformer.Mask{}, wireErr("%s: %d bytes of data for a mask of shape %v (want %d)", field, len(b.Data), shape, n)
	}
	data := make([]bool, n)
	for i, x := range b.Data {
		switch x {
		case 0:
		case 1:
			data[i] = true
		default:
			return transformer.Mask{}, wireErr("%s: byte %d is %d (want 0 or 1)", field, i, x)
		}
	}
	return transformer.Mask{Shape: shape, Data: data}, nil
}

// boolBytes views a []bool as bytes (a Go bool is one byte, 0 or 1), for
// fast scans.
func boolBytes(b []bool) []byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b))
}

// lastCausal remembers the data of the last mask isCausal accepted, so
// that the same mask (a model passes one CausalMask(S) with every write) is
// scanned once rather than on every write. Masks are values that are never
// changed, so the same data means the same mask.
var lastCausal atomic.Pointer[causalMemo]

type causalMemo struct {
	first *bool
	n     int
}

// isCausal reports whether m is EasyDeL's causal mask: shape (1, 1, n, n),
// true exactly on and below the diagonal.
func isCausal(m transformer.Mask) bool {
	if len(m.Shape) != 4 || m.Shape[0] != 1 || m.Shape[1] != 1 || m.Shape[2] != m.Shape[3] {
		return false
	}
	n := m.Shape[2]
	if len(m.Data) != n*n {
		return false
	}
	if n == 0 {
		return true
	}
	if memo := lastCausal.Load(); memo != nil && memo.first == &m.Data[0] && memo.n == n {
		return true
	}
	data := boolBytes(m.Data)
	for i := range n {
		row := data[i*n : (i+1)*n]
		if bytes.IndexByte(row[:i+1], 0) >= 0 || bytes.IndexByte(row[i+1:], 1) >= 0 {
			return false
		}
	}
	lastCausal.Store(&causalMemo{first: &m.Data[0], n: n})
	return true
}

// causalMasks holds CausalMask(S) per sequence length S, shared by every
// decoded write of caches of that length (a mask is S² bytes; building it
// per write would cost more than the write).
var causalMasks sync.Map // int → transformer.Mask

// causalMask returns transformer.CausalMask(n), built once per n.
func causalMask(n int) transformer.Mask {
	if m, ok := causalMasks.Load(n); ok {
		return m.(transformer.Mask)
	}
	m, _ := causalMasks.LoadOrStore(n, transformer.CausalMask(n))
	return m.(transformer.Mask)
}

// ---------------------------------------------------------------------------
// Specs

// specToProto returns s's wire form. Storage carries s's dtype, and a
// transformer or paged spec's quantization and NF4 block size (the grains
// then store int8 or NF4 keys and values or pages, as an embedded cache
// does); the mesh travels as its axis sizes; PartitionAxis (nil or not), Mode
// ("" apart from sharding.ModeDecode) and the metadata's PartitionAxis JSON
// (byte for byte) travel unchanged. An error wrapping actors.ErrInvalid
// names whatever the message cannot carry: a present but empty
// TransformerSpec.Starts (the wire has nil only),
// PagedSpec.Pool, a quantization that is none of None, Int8 and NF4, a Mode that is not
// one of sharding's four modes, a PartitionAxis name that is not valid
// UTF-8, the zero Mesh, and a spec without exactly one kind. A mesh travels
// as its axis sizes and, when not the default, its axis order.
func specToProto(s actors.Spec) (*messages.CacheSpec, error) {
	set := 0
	for _, p := range []bool{s.Transformer != nil, s.Paged != nil, s.Mamba != nil, s.Mamba2 != nil, s.Lightning != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return nil, wireErr("spec: a cache spec needs exactly one kind, got %d", set)
	}
	pa, err := partitionAxisToProto(s.PartitionAxis)
	if err != nil {
		return nil, err
	}
	mode, err := modeToProto(s.Mode)
	if err != nil {
		return nil, err
	}
	mesh, order, err := meshToProto(s.Mesh)
	if err != nil {
		return nil, err
	}
	p := &messages.CacheSpec{Mesh: mesh, MeshOrder: order, PartitionAxis: pa, Mode: mode}
	var dt tensor.DType
	switch {
	case s.Transformer != nil:
		t := s.Transformer
		if t.Starts != nil && len(t.Starts) == 0 {
			return nil, wireErr("spec.Transformer.Starts is present but empty: the wire cannot tell it from nil (no padding)")
		}
		p.TransformerStarts = slices.Clone(t.Starts)
		m := t.Metadata
		p.Metadata = &messages.CacheSpec_Transformer{Transformer: &messages.TransformerMetadata{
			BatchSize: int64(m.BatchSize), SequenceLength: int64(m.SequenceLength), NumHiddenLayers: int64(m.NumHiddenLayers),
			PadTokenId: int64(m.PadTokenID), NumHeads: optToProto(m.NumHeads), HeadDim: optToProto(m.HeadDim),
			KeyHeads: int64(m.KeyHeads), ValueHeads: int64(m.ValueHeads), KeyDim: int64(m.KeyDim), ValueDim: int64(m.ValueDim),
			UpdateCausalMask: m.UpdateCausalMask, CreateAttentionBias: m.CreateAttentionBias,
		}}
		dt = t.DType
	case s.Paged != nil:
		if s.Paged.Pool != nil {
			return nil, wireErr("spec.Paged.Pool is %+v: CacheSpec has no pool config field, only the HBMPageManager (nil Pool) can be sent", *s.Paged.Pool)
		}
		m := s.Paged.Metadata
		p.Metadata = &messages.CacheSpec_Paged{Paged: &messages.PagedMetadata{
			BatchSize: int64(m.BatchSize), NumHiddenLayers: int64(m.NumHiddenLayers), NumPagesPerLayer: int64(m.NumPagesPerLayer),
			NumPagesPerSequence: int64(m.NumPagesPerSequence), MaxSequences: int64(m.MaxSequences), PageSize: int64(m.PageSize),
			NumKvHeads: int64(m.NumKVHeads), KvHeadDimSize: int64(m.KVHeadDimSize), HbmUtilization: m.HBMUtilization,
		}}
		dt = s.Paged.DType
	case s.Mamba != nil:
		m := s.Mamba.Metadata
		p.Metadata = &messages.CacheSpec_Mamba{Mamba: &messages.MambaMetadata{
			NumHiddenLayers: int64(m.NumHiddenLayers), BatchSize: int64(m.BatchSize), IntermediateSize: int64(m.IntermediateSize),
			SsmStateSize: int64(m.SSMStateSize), ConvKernelSize: int64(m.ConvKernelSize),
			PartitionAxisJson: rawToProto(m.PartitionAxis),
		}}
		dt = s.Mamba.DType
	case s.Mamba2 != nil:
		m := s.Mamba2.Metadata
		p.Metadata = &messages.CacheSpec_Mamba2{Mamba2: &messages.Mamba2Metadata{
			NumHiddenLayers: int64(m.NumHiddenLayers), BatchSize: int64(m.BatchSize), IntermediateSize: int64(m.IntermediateSize),
			NumHeads: int64(m.NumHeads), HeadDim: int64(m.HeadDim), StateSize: int64(m.StateSize),
			ConvKernelSize: int64(m.ConvKernelSize), NGroups: int64(m.NGroups),
			PartitionAxisJson: rawToProto(m.PartitionAxis),
		}}
		dt = s.Mamba2.DType
	default:
		l := s.Lightning
		m := l.Metadata
		p.Metadata = &messages.CacheSpec_Lightning{Lightning: &messages.LightningMetadata{
			NumHiddenLayers: int64(l.Layers), BatchSize: optToProto(m.BatchSize), NumHeads: optToProto(m.NumHeads),
			HeadDim: optToProto(m.HeadDim), KeyHeads: optToProto(m.KeyHeads), ValueHeads: optToProto(m.ValueHeads),
			KeyDim: optToProto(m.KeyDim), ValueDim: optToProto(m.ValueDim),
			PartitionAxisJson: rawToProto(m.PartitionAxis),
		}}
		dt = l.DType
	}
	if !dt.Valid() {
		return nil, wireErr("spec %s dtype %s is not a tensor dtype", specKind(s), dt)
	}
	p.Storage = &messages.Storage{Dtype: messages.DType(dt)}
	switch {
	case s.Transformer != nil:
		err = quantizationToProto(p.Storage, "spec.Transformer", s.Transformer.Storage(), s.Transformer.Quantization, s.Transformer.BlockSize)
	case s.Paged != nil:
		err = quantizationToProto(p.Storage, "spec.Paged", s.Paged.Storage(), s.Paged.Quantization, s.Paged.BlockSize)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// quantizationToProto sets st's quantization and block size to q and block,
// or returns an error naming field and storage (described by desc) when
// the wire cannot carry them.
func quantizationToProto(st *messages.Storage, field string, desc fmt.Stringer, q tensor.Quantization, block int) error {
	wq, ok := wireQuantizations[q]
	if !ok || block < 0 || block > math.MaxUint32 {
		return wireErr("%s storage %s (block size %d) has no wire form", field, desc, block)
	}
	st.Quantization, st.BlockSize = wq, uint32(block)
	return nil
}

// quantizationFromProto returns the quantization st names, or an error
// naming it (field is st's: "spec.storage") when it is none of the enum's
// known values.
func quantizationFromProto(field string, st *messages.Storage) (tensor.Quantization, error) {
	for tq, wq := range wireQuantizations {
		if wq == st.GetQuantization() {
			return tq, nil
		}
	}
	return 0, wireErr("%s.quantization %s is not a quantization (want none, int8 or nf4)", field, st.GetQuantization())
}

// wireQuantizations maps a transformer or paged cache's storage
// quantization to its wire enum.
var wireQuantizations = map[tensor.Quantization]messages.Quantization{
	tensor.None: messages.Quantization_QUANTIZATION_NONE,
	tensor.Int8: messages.Quantization_QUANTIZATION_INT8,
	tensor.NF4:  messages.Quantization_QUANTIZATION_NF4,
}

// specFromProto returns the spec p describes. An unset metadata oneof, a
// storage dtype that is not a tensor dtype, quantized storage on a kind
// other than transformer and paged (only a TransformerSpec and a PagedSpec
// have it), an unknown quantization, a
// mode that is not one of the enum's values or a
// bad mesh is an error wrapping actors.ErrInvalid naming the field. The
// spec is not validated further (a partition axis naming an empty mesh
// axis, for instance, decodes): NewCache does that.
func specFromProto(p *messages.CacheSpec) (actors.Spec, error) {
	if p == nil {
		return actors.Spec{}, wireErr("spec: no cache spec")
	}
	st := p.GetStorage()
	dt := tensor.DType(st.GetDtype())
	if st.GetDtype() < 0 || st.GetDtype() > math.MaxUint8 || !dt.Valid() {
		return actors.Spec{}, wireErr("spec.storage.dtype %s is not a tensor dtype (want float32, bfloat16, float16, float64, int8 or uint8)", st.GetDtype())
	}
	quantized := st.GetQuantization() != messages.Quantization_QUANTIZATION_NONE || st.GetBlockSize() != 0
	_, isPaged := p.Metadata.(*messages.CacheSpec_Paged)
	_, contiguous := p.Metadata.(*messages.CacheSpec_Transformer)
	if quantized && !isPaged && !contiguous {
		return actors.Spec{}, wireErr("spec.storage is quantized (%s, block size %d): only a transformer or paged cache's spec holds quantized storage",
			st.GetQuantization(), st.GetBlockSize())
	}
	var q tensor.Quantization
	if isPaged || contiguous {
		var err error
		if q, err = quantizationFromProto("spec.storage", st); err != nil {
			return actors.Spec{}, err
		}
	}
	if len(p.TransformerStarts) > 0 && !contiguous {
		return actors.Spec{}, wireErr("spec.transformer_starts has %d entries on a spec that is not a transformer cache's", len(p.TransformerStarts))
	}
	mesh, err := meshFromProto(p.Mesh, p.MeshOrder)
	if err != nil {
		return actors.Spec{}, err
	}
	mode, err := modeFromProto(p.GetMode())
	if err != nil {
		return actors.Spec{}, err
	}
	s := actors.Spec{Mesh: mesh, PartitionAxis: partitionAxisFromProto(p.GetPartitionAxis()), Mode: mode}
	switch m := p.Metadata.(type) {
	case *messages.CacheSpec_Transformer:
		t := m.Transformer
		s.Transformer = &actors.TransformerSpec{DType: dt, Quantization: q, BlockSize: int(st.GetBlockSize()), Metadata: transformer.Metadata{
			BatchSize: int(t.GetBatchSize()), SequenceLength: int(t.GetSequenceLength()), NumHiddenLayers: int(t.GetNumHiddenLayers()),
			PadTokenID: int(t.GetPadTokenId()), NumHeads: optFromProto(t.NumHeads), HeadDim: optFromProto(t.HeadDim),
			KeyHeads: int(t.GetKeyHeads()), ValueHeads: int(t.GetValueHeads()), KeyDim: int(t.GetKeyDim()), ValueDim: int(t.GetValueDim()),
			UpdateCausalMask: t.GetUpdateCausalMask(), CreateAttentionBias: t.GetCreateAttentionBias(),
		}}
		if len(p.TransformerStarts) > 0 {
			s.Transformer.Starts = slices.Clone(p.TransformerStarts)
		}
	case *messages.CacheSpec_Paged:
		t := m.Paged
		s.Paged = &actors.PagedSpec{DType: dt, Quantization: q, BlockSize: int(st.GetBlockSize()), Metadata: paged.Metadata{
			BatchSize: int(t.GetBatchSize()), NumHiddenLayers: int(t.GetNumHiddenLayers()), NumPagesPerLayer: int(t.GetNumPagesPerLayer()),
			NumPagesPerSequence: int(t.GetNumPagesPerSequence()), MaxSequences: int(t.GetMaxSequences()), PageSize: int(t.GetPageSize()),
			NumKVHeads: int(t.GetNumKvHeads()), KVHeadDimSize: int(t.GetKvHeadDimSize()), HBMUtilization: t.GetHbmUtilization(),
		}}
	case *messages.CacheSpec_Mamba:
		t := m.Mamba
		s.Mamba = &actors.MambaSpec{DType: dt, Metadata: mamba.Metadata{
			NumHiddenLayers: int(t.GetNumHiddenLayers()), BatchSize: int(t.GetBatchSize()), IntermediateSize: int(t.GetIntermediateSize()),
			SSMStateSize: int(t.GetSsmStateSize()), ConvKernelSize: int(t.GetConvKernelSize()),
			PartitionAxis: rawFromProto(t.PartitionAxisJson),
		}}
	case *messages.CacheSpec_Mamba2:
		t := m.Mamba2
		s.Mamba2 = &actors.Mamba2Spec{DType: dt, Metadata: mamba2.Metadata{
			NumHiddenLayers: int(t.GetNumHiddenLayers()), BatchSize: int(t.GetBatchSize()), IntermediateSize: int(t.GetIntermediateSize()),
			NumHeads: int(t.GetNumHeads()), HeadDim: int(t.GetHeadDim()), StateSize: int(t.GetStateSize()),
			ConvKernelSize: int(t.GetConvKernelSize()), NGroups: int(t.GetNGroups()),
			PartitionAxis: rawFromProto(t.PartitionAxisJson),
		}}
	case *messages.CacheSpec_Lightning:
		t := m.Lightning
		s.Lightning = &actors.LightningSpec{Layers: int(t.GetNumHiddenLayers()), DType: dt, Metadata: lightning.Metadata{
			BatchSize: optFromProto(t.BatchSize), NumHeads: optFromProto(t.NumHeads), HeadDim: optFromProto(t.HeadDim),
			KeyHeads: optFromProto(t.KeyHeads), ValueHeads: optFromProto(t.ValueHeads),
			KeyDim: optFromProto(t.KeyDim), ValueDim: optFromProto(t.ValueDim),
			PartitionAxis: rawFromProto(t.PartitionAxisJson),
		}}
	default:
		return actors.Spec{}, wireErr("spec.metadata is unset (want transformer, paged, mamba, mamba2 or lightning)")
	}
	return s, nil
}

// rawToProto returns a metadata's partition_axis JSON for an optional
// bytes field: a copy, nil (absent) for nil, and present but empty for an
// empty non-nil value (invalid JSON, which the layer's Validate reports on
// the receiving side as it would on the sending side).
func rawToProto(raw json.RawMessage) []byte {
	return slices.Clone(raw)
}

// rawFromProto is rawToProto's inverse: absent gives nil, present gives a
// non-nil copy, even when empty.
func rawFromProto(b []byte) json.RawMessage {
	if b == nil {
		return nil
	}
	return append(json.RawMessage{}, b...)
}

// paMeshNames pairs the mesh-name fields of sharding.PartitionAxis with
// those of its wire message, by EasyDeL's name.
var paMeshNames = []struct {
	name string
	of   func(*sharding.PartitionAxis) *string
	wire func(*messages.PartitionAxis) *string
}{
	{"data_parallel_axis", func(p *sharding.PartitionAxis) *string { return &p.DataParallelAxis },
		func(p *messages.PartitionAxis) *string { return &p.DataParallelAxis }},
	{"fully_sharded_data_parallel_axis", func(p *sharding.PartitionAxis) *string { return &p.FullyShardedDataParallelAxis },
		func(p *messages.PartitionAxis) *string { return &p.FullyShardedDataParallelAxis }},
	{"tensor_parallel_axis", func(p *sharding.PartitionAxis) *string { return &p.TensorParallelAxis },
		func(p *messages.PartitionAxis) *string { return &p.TensorParallelAxis }},
	{"sequence_parallel_axis", func(p *sharding.PartitionAxis) *string { return &p.SequenceParallelAxis },
		func(p *messages.PartitionAxis) *string { return &p.SequenceParallelAxis }},
	{"expert_parallel_axis", func(p *sharding.PartitionAxis) *string { return &p.ExpertParallelAxis },
		func(p *messages.PartitionAxis) *string { return &p.ExpertParallelAxis }},
}

// paRules pairs the rules (MeshAxes fields) of sharding.PartitionAxis with
// those of its wire message, by EasyDeL's name.
var paRules = []struct {
	name string
	of   func(*sharding.PartitionAxis) *sharding.MeshAxes
	wire func(*messages.PartitionAxis) **messages.MeshAxes
}{
	{"batch_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.BatchAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.BatchAxis }},
	{"sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.SequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.SequenceAxis }},
	{"query_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.QuerySequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.QuerySequenceAxis }},
	{"head_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.HeadAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.HeadAxis }},
	{"kv_head_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.KVHeadAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.KvHeadAxis }},
	{"key_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.KeySequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.KeySequenceAxis }},
	{"hidden_state_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.HiddenStateAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.HiddenStateAxis }},
	{"mlp_intermediate_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.MLPIntermediateAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.MlpIntermediateAxis }},
	{"vocab_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.VocabAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.VocabAxis }},
	{"expert_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.ExpertAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.ExpertAxis }},
	{"expert_gate_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.ExpertGateAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.ExpertGateAxis }},
	{"attention_dim_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.AttentionDimAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.AttentionDimAxis }},
	{"bias_head_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.BiasHeadSequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.BiasHeadSequenceAxis }},
	{"bias_key_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.BiasKeySequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.BiasKeySequenceAxis }},
	{"decode_batch_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeBatchAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeBatchAxis }},
	{"decode_query_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeQuerySequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeQuerySequenceAxis }},
	{"decode_head_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeHeadAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeHeadAxis }},
	{"decode_kv_head_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeKVHeadAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeKvHeadAxis }},
	{"decode_key_sequence_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeKeySequenceAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeKeySequenceAxis }},
	{"decode_attention_dim_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeAttentionDimAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeAttentionDimAxis }},
	{"decode_attention_kv_dim_axis", func(p *sharding.PartitionAxis) *sharding.MeshAxes { return &p.DecodeAttentionKVDimAxis },
		func(p *messages.PartitionAxis) **messages.MeshAxes { return &p.DecodeAttentionKvDimAxis }},
}

// partitionAxisToProto returns pa's wire form, every field as it stands
// (nil gives nil: the default). A nil rule is an absent MeshAxes, an empty
// non-nil one a present MeshAxes without names. A name that is not valid
// UTF-8 (a proto string cannot hold it) is an error naming the field.
func partitionAxisToProto(pa *sharding.PartitionAxis) (*messages.PartitionAxis, error) {
	if pa == nil {
		return nil, nil
	}
	p := &messages.PartitionAxis{}
	for _, f := range paMeshNames {
		v := *f.of(pa)
		if !utf8.ValidString(v) {
			return nil, wireErr("spec.PartitionAxis.%s is %q, which is not valid UTF-8: the wire carries UTF-8 names only", f.name, v)
		}
		*f.wire(p) = v
	}
	for _, f := range paRules {
		r := *f.of(pa)
		if r == nil {
			continue
		}
		for _, name := range r {
			if !utf8.ValidString(name) {
				return nil, wireErr("spec.PartitionAxis.%s names %q, which is not valid UTF-8: the wire carries UTF-8 names only", f.name, name)
			}
		}
		*f.wire(p) = &messages.MeshAxes{Names: slices.Clone([]string(r))}
	}
	return p, nil
}

// partitionAxisFromProto is partitionAxisToProto's inverse (nil gives
// nil). The result is not validated: NewCache does that.
func partitionAxisFromProto(p *messages.PartitionAxis) *sharding.PartitionAxis {
	if p == nil {
		return nil
	}
	pa := &sharding.PartitionAxis{}
	for _, f := range paMeshNames {
		*f.of(pa) = *f.wire(p)
	}
	for _, f := range paRules {
		r := *f.wire(p)
		if r == nil {
			continue
		}
		*f.of(pa) = append(sharding.MeshAxes{}, r.GetNames()...)
	}
	return pa
}

// wireModes maps sharding's modes to the wire's; "" (the default) is
// MODE_UNSPECIFIED.
var wireModes = map[sharding.Mode]messages.Mode{
	"":                   messages.Mode_MODE_UNSPECIFIED,
	sharding.ModePrefill: messages.Mode_MODE_PREFILL,
	sharding.ModeDecode:  messages.Mode_MODE_DECODE,
	sharding.ModeTrain:   messages.Mode_MODE_TRAIN,
	sharding.ModeInsert:  messages.Mode_MODE_INSERT,
}

// modeToProto returns m's wire form; a Mode other than "" and the four
// modes is an error naming it.
func modeToProto(m sharding.Mode) (messages.Mode, error) {
	p, ok := wireModes[m]
	if !ok {
		return 0, wireErr("spec.Mode is %q: not a mode (want \"\", %q, %q, %q or %q)", m,
			sharding.ModeDecode, sharding.ModePrefill, sharding.ModeInsert, sharding.ModeTrain)
	}
	return p, nil
}

// modeFromProto is modeToProto's inverse; a value the enum does not
// define is an error naming it.
func modeFromProto(p messages.Mode) (sharding.Mode, error) {
	for m, w := range wireModes {
		if w == p {
			return m, nil
		}
	}
	return "", wireErr("spec.mode %d is not a mode (want MODE_UNSPECIFIED, MODE_PREFILL, MODE_DECODE, MODE_TRAIN or MODE_INSERT)", int32(p))
}

// optToProto converts an optional int to an optional int64 field.
func optToProto(v *int) *int64 {
	if v == nil {
		return nil
	}
	x := int64(*v)
	return &x
}

// optFromProto converts an optional int64 field to an optional int.
func optFromProto(v *int64) *int {
	if v == nil {
		return nil
	}
	x := int(*v)
	return &x
}

// meshToProto returns m's axis sizes, and its axis order when it is not
// the default one (dp, fsdp, tp, sp, ep restricted to its axes). A nil
// mesh gives nil, and so does a mesh without axes (one device), which a
// Spec treats as nil. The zero Mesh is an error. Devices are not carried.
func meshToProto(m *sharding.Mesh) (map[string]int64, []string, error) {
	if m == nil {
		return nil, nil, nil
	}
	if m.NumDevices() == 0 {
		return nil, nil, wireErr("spec.Mesh is the zero Mesh, which has no devices")
	}
	axes := m.Axes()
	if len(axes) == 0 {
		return nil, nil, nil
	}
	sizes := make(map[string]int64, len(axes))
	var order []string
	for _, a := range axes {
		sizes[a.Name] = int64(a.Size)
		order = append(order, a.Name)
	}
	var want []string
	for _, a := range sharding.DefaultAxisOrder() {
		if _, ok := sizes[a]; ok {
			want = append(want, a)
		}
	}
	if slices.Equal(order, want) {
		return sizes, nil, nil
	}
	return sizes, order, nil
}

// meshFromProto builds the mesh of the given axis sizes in order (empty:
// the default order), over devices 0..n-1 with no memory budget; an empty
// map gives nil. An unknown axis, a size that is not positive, more than
// sharding.MaxDevices devices or an order that does not list the axes
// once each is an error naming the value.
func meshFromProto(sizes map[string]int64, order []string) (*sharding.Mesh, error) {
	if len(sizes) == 0 {
		if len(order) > 0 {
			return nil, wireErr("spec.mesh_order %v names axes of an empty mesh", order)
		}
		return nil, nil
	}
	names := make([]string, 0, len(sizes))
	for a := range sizes {
		names = append(names, a)
	}
	sort.Strings(names)
	cfg := sharding.MeshConfig{Sizes: make(map[string]int, len(sizes))}
	n := 1
	for _, a := range names {
		s := sizes[a]
		if s <= 0 || s > sharding.MaxDevices {
			return nil, wireErr("spec.mesh axis %q has size %d (want 1..%d)", a, s, sharding.MaxDevices)
		}
		if n *= int(s); n > sharding.MaxDevices {
			return nil, wireErr("spec.mesh sizes %v give more than %d devices", sizes, sharding.MaxDevices)
		}
		cfg.Sizes[a] = int(s)
	}
	if len(order) > 0 {
		cfg.Order = slices.Clone(order)
	}
	cfg.Devices = sharding.UniformDevices(n, 0)
	m, err := sharding.NewMesh(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: spec.mesh: %w", actors.ErrInvalid, err)
	}
	return &m, nil
}

// ---------------------------------------------------------------------------
// Writes

// writeToProto returns layer's write w in wire form. An error wrapping
// actors.ErrInvalid names what cannot be sent: an InsertWrite whose slot
// is outside 0..2³²-1 or whose view cannot be encoded (its view travels as
// its snapshot), a layer outside 0..2³²-1, a TransformerWrite whose
// Query's batch or length differ from Key's (the wire has no query; only
// those two of its dimensions are read), a causal mask other than
// EasyDeL's lower-triangular (1, 1, n, n) one, present but empty
// TokenTypeIDs, a PagedWrite or PagedStoredWrite step whose
// present-but-empty parts the wire cannot tell from absent ones, a
// PagedStoredWrite whose storage has no wire form (a dtype that is not a
// tensor dtype, an unknown quantization, a block size outside
// 0..2³²-1), and a CachePosition or AdvanceSeq outside int32. A
// PagedStoredWrite travels as a PagedStoredWrite message: its storage, its
// four tensors byte for byte (codes and scales, or values) and its step.
func writeToProto(layer int, w actors.Write) (*messages.LayerWrite, error) {
	if layer < 0 || int64(layer) > math.MaxUint32 {
		return nil, wireErr("layer %d is out of the wire's range 0..%d", layer, uint32(math.MaxUint32))
	}
	p := &messages.LayerWrite{Layer: uint32(layer)}
	switch w := w.(type) {
	case *actors.TransformerWrite:
		if w == nil {
			break
		}
		t, err := transformerWriteToProto(w)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layer, err)
		}
		p.Write = &messages.LayerWrite_Transformer{Transformer: t}
		return p, nil
	case *actors.PagedWrite:
		if w == nil {
			break
		}
		st, err := pagedStepToProto("paged.step", w.Step)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layer, err)
		}
		p.Write = &messages.LayerWrite_Paged{Paged: &messages.PagedWrite{
			PrefillKey: tensorToProto(w.PrefillKey), PrefillValue: tensorToProto(w.PrefillValue),
			DecodeKey: tensorToProto(w.DecodeKey), DecodeValue: tensorToProto(w.DecodeValue), Step: st,
		}}
		return p, nil
	case *actors.MambaWrite:
		if w == nil {
			break
		}
		c, err := convSSMToProto(w.ConvSSM, 0)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layer, err)
		}
		p.Write = &messages.LayerWrite_ConvSsm{ConvSsm: c}
		return p, nil
	case *actors.Mamba2Write:
		if w == nil {
			break
		}
		c, err := convSSMToProto(w.ConvSSM, w.AdvanceSeq)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layer, err)
		}
		p.Write = &messages.LayerWrite_ConvSsm{ConvSsm: c}
		return p, nil
	case *actors.LightningWrite:
		if w == nil {
			break
		}
		p.Write = &messages.LayerWrite_Lightning{Lightning: &messages.LightningWrite{
			Key: tensorToProto(w.Key), Value: tensorToProto(w.Value),
			SlopeRate: slices.Clone(w.SlopeRate), KeyValue: tensorToProto(w.KeyValue),
		}}
		return p, nil
	case actors.KeepWrite:
		return p, nil // no kind: the grain keeps its view
	case *actors.InsertWrite:
		if w == nil {
			break
		}
		if w.Slot < 0 || int64(w.Slot) > math.MaxUint32 {
			return nil, wireErr("layer %d: insert slot %d is out of the wire's range 0..%d", layer, w.Slot, uint32(math.MaxUint32))
		}
		data, err := w.Other.MarshalBinary()
		if err != nil {
			return nil, wireErr("layer %d: insert view: %v", layer, err)
		}
		p.Write = &messages.LayerWrite_Insert{Insert: &messages.InsertWrite{Slot: uint32(w.Slot), View: data}}
		return p, nil
	case *actors.PagedStoredWrite:
		if w == nil {
			break
		}
		ps, err := pagedStoredWriteToProto(w)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", layer, err)
		}
		p.Write = &messages.LayerWrite_PagedStored{PagedStored: ps}
		return p, nil
	}
	return nil, wireErr("layer %d: write %T (%v) cannot be sent (want a non-nil TransformerWrite, PagedWrite, PagedStoredWrite, MambaWrite, Mamba2Write, LightningWrite or InsertWrite)", layer, w, w)
}

// transformerWriteToProto converts a contiguous-cache write.
func transformerWriteToProto(w *actors.TransformerWrite) (*messages.TransformerWrite, error) {
	if q := w.Query; !q.IsZero() {
		k := w.Key
		if q.Rank() != 4 || k.Rank() != 4 || q.Dim(0) != k.Dim(0) || q.Dim(1) != k.Dim(1) {
			return nil, wireErr("transformer.query has shape %v and key %v: TransformerWrite has no query field, so only a query whose batch and length equal the key's can be sent", q.Shape(), k.Shape())
		}
	}
	mask, err := maskToProto("transformer.attention_mask", w.Mask)
	if err != nil {
		return nil, err
	}
	p := &messages.TransformerWrite{Key: tensorToProto(w.Key), Value: tensorToProto(w.Value), AttentionMask: mask}
	if cm := w.Options.CausalMask; !cm.IsZero() {
		if !isCausal(cm) {
			return nil, wireErr("transformer.options.causal_mask of shape %v is not EasyDeL's lower-triangular (1, 1, n, n) mask: the wire carries only a causal flag", cm.Shape)
		}
		p.Causal = true
	}
	if tt := w.Options.TokenTypeIDs; tt != nil {
		if len(tt) == 0 {
			return nil, wireErr("transformer.options.token_type_ids is present with no rows: the wire cannot tell that from absent")
		}
		p.TokenTypeIds = make([]*messages.TokenTypes, len(tt))
		for b, row := range tt {
			p.TokenTypeIds[b] = &messages.TokenTypes{Ids: slices.Clone(row)}
		}
	}
	return p, nil
}

// pagedStoredWriteToProto converts a stored-rows paged write: its storage
// (dtype, quantization, NF4 block size), its four tensors and its step.
// A storage dtype that is not a tensor dtype, a quantization the wire has
// no enum value for, a block size outside 0..2³²-1, or a step
// pagedStepToProto cannot carry is an error naming the field.
func pagedStoredWriteToProto(w *actors.PagedStoredWrite) (*messages.PagedStoredWrite, error) {
	st := w.Rows.Storage
	if !st.DType.Valid() {
		return nil, wireErr("paged_stored.storage.dtype %s is not a tensor dtype (want float32, bfloat16, float16 or float64)", st.DType)
	}
	ps := &messages.Storage{Dtype: messages.DType(st.DType)}
	if err := quantizationToProto(ps, "paged_stored", st, st.Quantization, st.BlockSize); err != nil {
		return nil, err
	}
	step, err := pagedStepToProto("paged_stored.step", w.Step)
	if err != nil {
		return nil, err
	}
	return &messages.PagedStoredWrite{
		Storage: ps, Key: tensorToProto(w.Rows.Key), Value: tensorToProto(w.Rows.Value),
		KeyScales: tensorToProto(w.Rows.KeyScales), ValueScales: tensorToProto(w.Rows.ValueScales), Step: step,
	}, nil
}

// pagedStepToProto converts a paged step; field names it in errors
// ("paged.step"). The wire marks the presence of each part with
// has_prefill and has_decodes; prefill_position and decodes_page_table
// are present when they have entries (or, for the page table, with the
// decode part). A present but empty PrefillPosition, a DecodesPageTable
// absent while DecodesPosition is present, or present and empty while
// DecodesPosition is absent, cannot be carried.
func pagedStepToProto(field string, s paged.StepMetadata) (*messages.PagedStep, error) {
	if s.PrefillPosition != nil && len(s.PrefillPosition) == 0 {
		return nil, wireErr("%s.prefill_position is present but empty: the wire cannot tell it from absent (positions 0..T-1)", field)
	}
	if (s.DecodesPageTable != nil) != (s.HasDecodes() || len(s.DecodesPageTable) > 0) {
		return nil, wireErr("%s.decodes_page_table is present=%t with %d rows while decodes_position is present=%t: the wire ties an empty page table's presence to decodes_position's",
			field, s.DecodesPageTable != nil, len(s.DecodesPageTable), s.HasDecodes())
	}
	p := &messages.PagedStep{
		HasPrefill: s.HasPrefill(), PrefillLength: s.PrefillLength,
		PrefillPosition: slices.Clone(s.PrefillPosition), PrefillPageTable: slices.Clone(s.PrefillPageTable),
		HasDecodes: s.HasDecodes(), DecodesPosition: slices.Clone(s.DecodesPosition),
	}
	if s.DecodesPageTable != nil {
		p.DecodesPageTable = make([]*messages.PageTableRow, len(s.DecodesPageTable))
		for b, row := range s.DecodesPageTable {
			p.DecodesPageTable[b] = &messages.PageTableRow{Pages: slices.Clone(row)}
		}
	}
	return p, nil
}

// convSSMToProto converts a Mamba or Mamba2 write; advance is Mamba2's
// AdvanceSeq (0 for Mamba).
func convSSMToProto(c actors.ConvSSM, advance int) (*messages.ConvSSMWrite, error) {
	if c.CachePosition < math.MinInt32 || c.CachePosition > math.MaxInt32 {
		return nil, wireErr("conv_ssm.cache_position %d does not fit int32", c.CachePosition)
	}
	if advance < math.MinInt32 || advance > math.MaxInt32 {
		return nil, wireErr("conv_ssm.advance_seq %d does not fit int32", advance)
	}
	return &messages.ConvSSMWrite{
		ConvColumn: tensorToProto(c.ConvColumn), CachePosition: int32(c.CachePosition),
		ConvWindow: tensorToProto(c.ConvWindow), SsmState: tensorToProto(c.SSMState), AdvanceSeq: int32(advance),
	}, nil
}

// writeFromProto returns the write p carries, for a layer of a cache of
// spec (the write's layer is p.Layer). The spec settles what the wire
// leaves open: a conv_ssm write is a MambaWrite for a Mamba cache and a
// Mamba2Write for a Mamba2 cache, and a transformer write's causal flag is
// transformer.CausalMask(sequence_length) (shared by every write of that
// length: do not change its data). A write of another kind than spec's,
// an unset oneof, a bad tensor or mask, an inconsistent paged step or an
// advance_seq on a Mamba cache is an error wrapping actors.ErrInvalid (and
// actors.ErrKind for a kind mismatch) naming the field. Tensors share the
// message's data (see tensorFromProto).
func writeFromProto(p *messages.LayerWrite, spec actors.Spec) (actors.Write, error) {
	if p == nil {
		return nil, wireErr("no layer write")
	}
	w, err := writeOf(p, spec)
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", p.Layer, err)
	}
	return w, nil
}

func writeOf(p *messages.LayerWrite, spec actors.Spec) (actors.Write, error) {
	switch m := p.Write.(type) {
	case *messages.LayerWrite_Transformer:
		if spec.Transformer == nil {
			return nil, kindErr("transformer", spec)
		}
		return transformerWriteFromProto(m.Transformer, spec.Transformer.Metadata.SequenceLength)
	case *messages.LayerWrite_Paged:
		if spec.Paged == nil {
			return nil, kindErr("paged", spec)
		}
		return pagedWriteFromProto(m.Paged)
	case *messages.LayerWrite_PagedStored:
		if spec.Paged == nil {
			return nil, kindErr("paged_stored", spec)
		}
		return pagedStoredWriteFromProto(m.PagedStored)
	case *messages.LayerWrite_ConvSsm:
		if spec.Mamba == nil && spec.Mamba2 == nil {
			return nil, kindErr("conv_ssm", spec)
		}
		return convSSMFromProto(m.ConvSsm, spec.Mamba2 != nil)
	case *messages.LayerWrite_Lightning:
		if spec.Lightning == nil {
			return nil, kindErr("lightning", spec)
		}
		return lightningWriteFromProto(m.Lightning)
	case *messages.LayerWrite_Insert:
		if spec.Transformer == nil {
			return nil, kindErr("insert", spec)
		}
		v, err := transformer.UnmarshalView(m.Insert.GetView())
		if err != nil {
			return nil, wireErr("insert.view: %v", err)
		}
		return &actors.InsertWrite{Slot: int(m.Insert.GetSlot()), Other: v}, nil
	}
	return nil, wireErr("write is unset (want transformer, paged, paged_stored, conv_ssm, lightning or insert)")
}

// transformerWriteFromProto decodes a contiguous-cache write; seqLen sizes
// the causal mask.
func transformerWriteFromProto(p *messages.TransformerWrite, seqLen int) (*actors.TransformerWrite, error) {
	w := &actors.TransformerWrite{}
	var err error
	if w.Key, err = decodeTensor("transformer.key", p.GetKey()); err != nil {
		return nil, err
	}
	if w.Value, err = decodeTensor("transformer.value", p.GetValue()); err != nil {
		return nil, err
	}
	if w.Mask, err = maskFromProto("transformer.attention_mask", p.GetAttentionMask()); err != nil {
		return nil, err
	}
	if p.GetCausal() {
		if seqLen < 0 {
			return nil, wireErr("transformer.causal with a cache of sequence_length %d", seqLen)
		}
		w.Options.CausalMask = causalMask(seqLen)
	}
	if tt := p.GetTokenTypeIds(); len(tt) > 0 {
		w.Options.TokenTypeIDs = make([][]int32, len(tt))
		for b, row := range tt {
			w.Options.TokenTypeIDs[b] = slices.Clone(row.GetIds())
			if w.Options.TokenTypeIDs[b] == nil {
				w.Options.TokenTypeIDs[b] = []int32{}
			}
		}
	}
	return w, nil
}

// pagedWriteFromProto decodes a paged write.
func pagedWriteFromProto(p *messages.PagedWrite) (*actors.PagedWrite, error) {
	w := &actors.PagedWrite{}
	var err error
	for _, f := range []struct {
		name string
		t    *messages.Tensor
		dst  *tensor.Tensor
	}{
		{"paged.prefill_key", p.GetPrefillKey(), &w.PrefillKey},
		{"paged.prefill_value", p.GetPrefillValue(), &w.PrefillValue},
		{"paged.decode_key", p.GetDecodeKey(), &w.DecodeKey},
		{"paged.decode_value", p.GetDecodeValue(), &w.DecodeValue},
	} {
		if *f.dst, err = decodeTensor(f.name, f.t); err != nil {
			return nil, err
		}
	}
	if w.Step, err = pagedStepFromProto("paged.step", p.GetStep()); err != nil {
		return nil, err
	}
	return w, nil
}

// pagedStoredWriteFromProto decodes a stored-rows paged write. A missing
// storage, a storage dtype that is not a tensor dtype, an unknown
// quantization, a bad tensor or an inconsistent step is an error naming the field. Whether the rows fit
// the layer (storage, shapes, dtypes) is the layer's to check when it
// applies them (paged.View.WriteStored).
func pagedStoredWriteFromProto(p *messages.PagedStoredWrite) (*actors.PagedStoredWrite, error) {
	st := p.GetStorage()
	if st == nil {
		return nil, wireErr("paged_stored.storage is unset (want the rows' dtype, quantization and block size)")
	}
	dt := tensor.DType(st.GetDtype())
	if st.GetDtype() < 0 || st.GetDtype() > math.MaxUint8 || !dt.Valid() {
		return nil, wireErr("paged_stored.storage.dtype %s is not a tensor dtype (want float32, bfloat16, float16, float64, int8 or uint8)", st.GetDtype())
	}
	q, err := quantizationFromProto("paged_stored.storage", st)
	if err != nil {
		return nil, err
	}
	w := &actors.PagedStoredWrite{Rows: paged.Stored{Storage: paged.Storage{DType: dt, Quantization: q, BlockSize: int(st.GetBlockSize())}}}
	for _, f := range []struct {
		name string
		t    *messages.Tensor
		dst  *tensor.Tensor
	}{
		{"paged_stored.key", p.GetKey(), &w.Rows.Key},
		{"paged_stored.value", p.GetValue(), &w.Rows.Value},
		{"paged_stored.key_scales", p.GetKeyScales(), &w.Rows.KeyScales},
		{"paged_stored.value_scales", p.GetValueScales(), &w.Rows.ValueScales},
	} {
		if *f.dst, err = decodeTensor(f.name, f.t); err != nil {
			return nil, err
		}
	}
	if w.Step, err = pagedStepFromProto("paged_stored.step", p.GetStep()); err != nil {
		return nil, err
	}
	return w, nil
}

// pagedStepFromProto decodes a paged step (nil: every part absent); field
// names it in errors ("paged.step"). A page table sent for an absent part
// (entries with has_prefill false, decodes_position entries with
// has_decodes false) is an error.
func pagedStepFromProto(field string, p *messages.PagedStep) (paged.StepMetadata, error) {
	if !p.GetHasPrefill() && len(p.GetPrefillPageTable()) > 0 {
		return paged.StepMetadata{}, wireErr("%s.prefill_page_table has %d entries but has_prefill is false", field, len(p.GetPrefillPageTable()))
	}
	if !p.GetHasDecodes() && len(p.GetDecodesPosition()) > 0 {
		return paged.StepMetadata{}, wireErr("%s.decodes_position has %d entries but has_decodes is false", field, len(p.GetDecodesPosition()))
	}
	s := paged.StepMetadata{PrefillLength: p.GetPrefillLength()}
	if len(p.GetPrefillPosition()) > 0 {
		s.PrefillPosition = slices.Clone(p.GetPrefillPosition())
	}
	if p.GetHasPrefill() {
		s.PrefillPageTable = append([]int32{}, p.GetPrefillPageTable()...)
	}
	if p.GetHasDecodes() {
		s.DecodesPosition = append([]int32{}, p.GetDecodesPosition()...)
	}
	if rows := p.GetDecodesPageTable(); p.GetHasDecodes() || len(rows) > 0 {
		s.DecodesPageTable = make([][]int32, len(rows))
		for b, row := range rows {
			s.DecodesPageTable[b] = append([]int32{}, row.GetPages()...)
		}
	}
	return s, nil
}

// convSSMFromProto decodes a conv/SSM write as a Mamba2Write (mamba2) or a
// MambaWrite; advance_seq on a Mamba layer is an error.
func convSSMFromProto(p *messages.ConvSSMWrite, mamba2 bool) (actors.Write, error) {
	var c actors.ConvSSM
	var err error
	if c.ConvColumn, err = decodeTensor("conv_ssm.conv_column", p.GetConvColumn()); err != nil {
		return nil, err
	}
	if c.ConvWindow, err = decodeTensor("conv_ssm.conv_window", p.GetConvWindow()); err != nil {
		return nil, err
	}
	if c.SSMState, err = decodeTensor("conv_ssm.ssm_state", p.GetSsmState()); err != nil {
		return nil, err
	}
	c.CachePosition = int(p.GetCachePosition())
	if mamba2 {
		return &actors.Mamba2Write{ConvSSM: c, AdvanceSeq: int(p.GetAdvanceSeq())}, nil
	}
	if p.GetAdvanceSeq() != 0 {
		return nil, wireErr("conv_ssm.advance_seq is %d for a Mamba layer (only Mamba2 layers advance a sequence)", p.GetAdvanceSeq())
	}
	return &actors.MambaWrite{ConvSSM: c}, nil
}

// lightningWriteFromProto decodes a lightning write.
func lightningWriteFromProto(p *messages.LightningWrite) (*actors.LightningWrite, error) {
	w := &actors.LightningWrite{SlopeRate: slices.Clone(p.GetSlopeRate())}
	var err error
	if w.Key, err = decodeTensor("lightning.key", p.GetKey()); err != nil {
		return nil, err
	}
	if w.Value, err = decodeTensor("lightning.value", p.GetValue()); err != nil {
		return nil, err
	}
	if w.KeyValue, err = decodeTensor("lightning.key_value", p.GetKeyValue()); err != nil {
		return nil, err
	}
	return w, nil
}

// ---------------------------------------------------------------------------
// Results

// resultToProto returns r's Key, Value and Mask as a WriteLayerReply with
// status OK. r.View is not sent (it stays with the layer's grain); a
// sharded layer's Parts cannot be sent and are an error wrapping
// actors.ErrInvalid.
func resultToProto(r actors.Result) (*messages.WriteLayerReply, error) {
	if len(r.Parts) > 0 {
		return nil, wireErr("result.parts has %d parts: WriteLayerReply carries only a whole layer's key, value and mask", len(r.Parts))
	}
	mask, err := maskToProto("result.mask", r.Mask)
	if err != nil {
		return nil, err
	}
	return &messages.WriteLayerReply{Status: &messages.Status{Code: messages.Code_CODE_OK},
		Key: tensorToProto(r.Key), Value: tensorToProto(r.Value), Mask: mask}, nil
}

// resultFromProto returns the Result p carries (View and Parts zero). A
// reply whose status is not OK gives its *actors.StatusError; a bad tensor
// or mask is an error wrapping actors.ErrInvalid.
func resultFromProto(p *messages.WriteLayerReply) (actors.Result, error) {
	if p == nil {
		return actors.Result{}, wireErr("no write layer reply")
	}
	if st := p.GetStatus(); st.GetCode() != messages.Code_CODE_OK {
		return actors.Result{}, &actors.StatusError{Code: st.GetCode(), Message: st.GetMessage()}
	}
	var r actors.Result
	var err error
	if r.Key, err = decodeTensor("result.key", p.GetKey()); err != nil {
		return actors.Result{}, err
	}
	if r.Value, err = decodeTensor("result.value", p.GetValue()); err != nil {
		return actors.Result{}, err
	}
	if r.Mask, err = maskFromProto("result.mask", p.GetMask()); err != nil {
		return actors.Result{}, err
	}
	return r, nil
}
