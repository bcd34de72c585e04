package transfer

import (
	"context"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Bundle is what one transfer moves: named tensors, in order, and string
// metadata. Names are unique and non-empty.
type Bundle struct {
	Names    []string
	Tensors  []tensor.Tensor
	Metadata map[string]string
}

// Validate reports a malformed bundle, naming the offending tensor.
func (b Bundle) Validate() error {
	if len(b.Names) != len(b.Tensors) {
		return fmt.Errorf("%w: %d names for %d tensors", ErrBundle, len(b.Names), len(b.Tensors))
	}
	seen := map[string]bool{}
	for i, name := range b.Names {
		if name == "" || seen[name] {
			return fmt.Errorf("%w: tensor %d has an empty or duplicate name %q", ErrBundle, i, name)
		}
		seen[name] = true
		if b.Tensors[i].IsZero() || !b.Tensors[i].DType().Valid() {
			return fmt.Errorf("%w: tensor %s is absent", ErrBundle, name)
		}
	}
	return nil
}

// Tensor returns the tensor called name.
func (b Bundle) Tensor(name string) (tensor.Tensor, bool) {
	for i, n := range b.Names {
		if n == name {
			return b.Tensors[i], true
		}
	}
	return tensor.Tensor{}, false
}

// NumBytes is the bundle's tensor data size.
func (b Bundle) NumBytes() int {
	n := 0
	for _, t := range b.Tensors {
		n += t.NumBytes()
	}
	return n
}

// Metadata keys and tensor names of a sequence bundle.
const (
	// MetaLength is the sequence's token count.
	MetaLength = "kvmesh.length"
	// MetaLayers is the number of layers.
	MetaLayers = "kvmesh.layers"
	// MetaDType, MetaQuantization and MetaBlockSize name the storage of a
	// quantized paged sequence (paged.Storage: the cache dtype, "8BIT" or
	// "NF4", and the resolved NF4 block, "0" for int8). An unquantized
	// bundle has none of them: its storage is its key tensors' dtype.
	MetaDType        = "kvmesh.dtype"
	MetaQuantization = "kvmesh.quantization"
	MetaBlockSize    = "kvmesh.block_size"
)

// KeyName and ValueName name layer l's key and value tensors in a sequence
// bundle (the values, or the codes of a quantized sequence);
// KeyScalesName and ValueScalesName name a quantized sequence's scales;
// StateName names a recurrent state of layer l (e.g. "conv", "ssm").
func KeyName(l int) string                { return "layer/" + strconv.Itoa(l) + "/key" }
func ValueName(l int) string              { return "layer/" + strconv.Itoa(l) + "/value" }
func KeyScalesName(l int) string          { return "layer/" + strconv.Itoa(l) + "/key_scales" }
func ValueScalesName(l int) string        { return "layer/" + strconv.Itoa(l) + "/value_scales" }
func StateName(l int, kind string) string { return "layer/" + strconv.Itoa(l) + "/state/" + kind }

// PagedSequence packs one sequence of a paged cache version: for every
// layer, the first length positions read through pageTable (the sequence's
// logical → physical pages) in the form the cache stores them
// (paged.View.GatherStored). For an unquantized cache that is (length,
// Hkv, D) key and value tensors in the cache dtype (KeyName, ValueName).
// For a quantized one it is the codes (KeyName, ValueName: int8 (length,
// Hkv, D) or packed NF4 (length, Hkv, ceil(D/2))) and the scales
// (KeyScalesName, ValueScalesName: (length, Hkv, 1) or (length, Hkv,
// D/block) in the cache dtype), byte for byte, with the storage in the
// metadata (MetaDType, MetaQuantization, MetaBlockSize): nothing is
// dequantized, so the receiver gets the exact rows, in fewer bytes than
// the values. The sequence's pages are gathered, not the pool, so the
// bytes moved are those of its tokens. states, if given, are added as
// recurrent states (StateName) of a hybrid model's other layers.
//
// A sharded version is joined per layer by Version.Layer first, which
// copies the layer; unsharded versions are read in place. Layers stored
// in different formats are an error.
func PagedSequence(v actors.Version, pageTable []int32, length int, states map[string]tensor.Tensor) (Bundle, error) {
	b := Bundle{Metadata: map[string]string{MetaLength: strconv.Itoa(length), MetaLayers: strconv.Itoa(len(v.Views))}}
	var first paged.Storage
	for l := range v.Views {
		view, err := v.Layer(l)
		if err != nil {
			return Bundle{}, err
		}
		pv, ok := view.(paged.View)
		if !ok {
			return Bundle{}, fmt.Errorf("%w: layer %d of version %d is a %T, not a paged.View", ErrBundle, l, v.Number, view)
		}
		s, err := pv.GatherStored(pageTable, length)
		if err != nil {
			return Bundle{}, fmt.Errorf("layer %d of version %d: %w", l, v.Number, err)
		}
		if l == 0 {
			first = s.Storage
		} else if s.Storage != first {
			return Bundle{}, fmt.Errorf("%w: layer %d of version %d is stored as %s, layer 0 as %s", ErrBundle, l, v.Number, s.Storage, first)
		}
		b.Names = append(b.Names, KeyName(l), ValueName(l))
		b.Tensors = append(b.Tensors, s.Key, s.Value)
		if s.Storage.Quantization != tensor.None {
			b.Names = append(b.Names, KeyScalesName(l), ValueScalesName(l))
			b.Tensors = append(b.Tensors, s.KeyScales, s.ValueScales)
		}
	}
	if first.Quantization != tensor.None {
		b.Metadata[MetaDType] = first.DType.String()
		b.Metadata[MetaQuantization] = first.Quantization.String()
		b.Metadata[MetaBlockSize] = strconv.Itoa(first.BlockSize)
	}
	for name, t := range states {
		b.Names = append(b.Names, name)
		b.Tensors = append(b.Tensors, t)
	}
	return b, b.Validate()
}

// bundleStorage returns the storage a sequence bundle's metadata names
// (MetaDType, MetaQuantization, MetaBlockSize), and false when it names
// none (an unquantized bundle). Keys that are partly present, unparsable
// or name an unquantized or invalid storage are an error.
func bundleStorage(meta map[string]string) (paged.Storage, bool, error) {
	dt, okD := meta[MetaDType]
	q, okQ := meta[MetaQuantization]
	bs, okB := meta[MetaBlockSize]
	if !okD && !okQ && !okB {
		return paged.Storage{}, false, nil
	}
	if !okD || !okQ || !okB {
		return paged.Storage{}, false, fmt.Errorf("%w: metadata %s = %q, %s = %q, %s = %q: a quantized sequence needs all three",
			ErrBundle, MetaDType, dt, MetaQuantization, q, MetaBlockSize, bs)
	}
	var st paged.Storage
	var err error
	if st.DType, err = tensor.ParseDType(dt); err != nil {
		return paged.Storage{}, false, fmt.Errorf("%w: metadata %s = %q: %v", ErrBundle, MetaDType, dt, err)
	}
	if st.Quantization, err = tensor.ParseQuantization(q); err != nil {
		return paged.Storage{}, false, fmt.Errorf("%w: metadata %s = %q: %v", ErrBundle, MetaQuantization, q, err)
	}
	if st.BlockSize, err = strconv.Atoi(bs); err != nil {
		return paged.Storage{}, false, fmt.Errorf("%w: metadata %s = %q is not a block size", ErrBundle, MetaBlockSize, bs)
	}
	if st.Quantization == tensor.None {
		return paged.Storage{}, false, fmt.Errorf("%w: metadata %s = %q: a bundle naming its storage is quantized (8BIT or NF4)", ErrBundle, MetaQuantization, q)
	}
	if err := st.Validate(); err != nil {
		return paged.Storage{}, false, fmt.Errorf("%w: storage %s: %v", ErrBundle, st, err)
	}
	return st, true, nil
}

// Cache is the receiving cache ApplyPaged writes a sequence into: the
// part of the runtimes' cache API it uses. Both an embedded cache
// (*actors.Cache) and a clustered one (*cluster.Cache, whose grains get
// the stored rows over the cluster wire) satisfy it. Step publishes
// version base+1 with every write or refuses them all.
type Cache interface {
	// ID is the cache's id, named in errors.
	ID() string
	// Layers is the cache's number of layers.
	Layers() int
	// Step writes every listed layer on top of version base and returns
	// the new version.
	Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (uint64, []actors.Result, error)
}

// StateCache is what ApplyRecurrent needs of the receiving state cache:
// a Cache whose published versions it can read. The embedded
// (*actors.Cache) and the clustered (*cluster.Cache) caches both are one.
type StateCache interface {
	Cache
	// Snapshot returns published version number.
	Snapshot(ctx context.Context, number uint64) (actors.Version, error)
}

// The embedded cache satisfies Cache and StateCache; the clustered one's
// package imports this one, so tests/cluster checks it
// (TestApplyPagedIntoClusteredCache, TestApplyRecurrentIntoClusteredCache).
var (
	_ Cache      = (*actors.Cache)(nil)
	_ StateCache = (*actors.Cache)(nil)
)

// ApplyPaged writes a sequence bundle (PagedSequence) into cache c, an
// embedded or a clustered cache, on top of version base, through pageTable (the pages the receiving cache
// allocated for the sequence, enough for its length): one Step with a
// stored-rows write per layer (actors.PagedStoredWrite), so the receiving
// cache publishes the sequence as version base+1, atomically, and no other
// sequence's pages change. It returns the new version.
//
// The rows are written verbatim: the receiving cache must store its pages
// as the bundle does (same dtype, quantization and NF4 block; for an
// unquantized bundle, the cache dtype of its key tensors). Otherwise the
// step is refused with an error naming both formats ("rows stored as
// bfloat16 8BIT into a view stored as bfloat16"): ApplyPaged never
// converts, so nothing is lost silently. A caller that wants a conversion
// makes it explicit: it gathers the sequence's values on the sender
// (paged.View.Gather) and writes them with PagedWrite prefill writes,
// which round to, or re-quantize into, the receiver's storage. A clustered
// receiver refuses the same way; its grains' refusals come back as
// *actors.StatusError carrying the message (a mesh-cut receiver refuses on
// the client, wrapping paged.ErrStorageMismatch, as embedded).
func ApplyPaged(ctx context.Context, c Cache, base uint64, pageTable []int32, b Bundle) (uint64, error) {
	length, err := strconv.Atoi(b.Metadata[MetaLength])
	if err != nil {
		return 0, fmt.Errorf("%w: metadata %s = %q is not a length", ErrBundle, MetaLength, b.Metadata[MetaLength])
	}
	layers, err := strconv.Atoi(b.Metadata[MetaLayers])
	if err != nil || layers != c.Layers() {
		return 0, fmt.Errorf("%w: bundle of %q layers for cache %s of %d layers", ErrBundle, b.Metadata[MetaLayers], c.ID(), c.Layers())
	}
	st, quantized, err := bundleStorage(b.Metadata)
	if err != nil {
		return 0, err
	}
	writes := make([]actors.LayerWrite, layers)
	for l := range layers {
		k, ok1 := b.Tensor(KeyName(l))
		val, ok2 := b.Tensor(ValueName(l))
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("%w: bundle has no key or value for layer %d", ErrBundle, l)
		}
		if k.Rank() < 1 || k.Dim(0) != length {
			return 0, fmt.Errorf("%w: layer %d key has shape %v, want %d positions", ErrBundle, l, k.Shape(), length)
		}
		rows := paged.Stored{Storage: paged.Storage{DType: k.DType()}, Key: k, Value: val}
		if quantized {
			rows.Storage = st
			ks, ok1 := b.Tensor(KeyScalesName(l))
			vs, ok2 := b.Tensor(ValueScalesName(l))
			if !ok1 || !ok2 {
				return 0, fmt.Errorf("%w: %s bundle has no key or value scales for layer %d", ErrBundle, st, l)
			}
			rows.KeyScales, rows.ValueScales = ks, vs
		}
		writes[l] = actors.LayerWrite{Layer: l, Write: &actors.PagedStoredWrite{Rows: rows,
			Step: paged.StepMetadata{PrefillLength: int32(length), PrefillPageTable: pageTable}}}
	}
	v, _, err := c.Step(ctx, base, writes)
	if err != nil {
		return 0, fmt.Errorf("apply sequence to cache %s: %w", c.ID(), err)
	}
	return v, nil
}
