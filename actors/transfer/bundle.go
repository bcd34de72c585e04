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
)

// KeyName and ValueName name layer l's key and value tensors in a sequence
// bundle; StateName names a recurrent state of layer l (e.g. "conv",
// "ssm").
func KeyName(l int) string                { return "layer/" + strconv.Itoa(l) + "/key" }
func ValueName(l int) string              { return "layer/" + strconv.Itoa(l) + "/value" }
func StateName(l int, kind string) string { return "layer/" + strconv.Itoa(l) + "/state/" + kind }

// PagedSequence packs one sequence of a paged cache version: for every
// layer, the first length positions read through pageTable (the sequence's
// logical → physical pages) as (length, Hkv, D) key and value tensors in
// the cache dtype. The sequence's pages are gathered, not the pool, so the
// bytes moved are those of its tokens. states, if given, are added as
// recurrent states (StateName) of a hybrid model's other layers.
//
// A sharded version is joined per layer by Version.Layer first, which
// copies the layer; unsharded versions are read in place.
func PagedSequence(v actors.Version, pageTable []int32, length int, states map[string]tensor.Tensor) (Bundle, error) {
	b := Bundle{Metadata: map[string]string{MetaLength: strconv.Itoa(length), MetaLayers: strconv.Itoa(len(v.Views))}}
	for l := range v.Views {
		view, err := v.Layer(l)
		if err != nil {
			return Bundle{}, err
		}
		pv, ok := view.(paged.View)
		if !ok {
			return Bundle{}, fmt.Errorf("%w: layer %d of version %d is a %T, not a paged.View", ErrBundle, l, v.Number, view)
		}
		k, val, err := pv.Gather(pageTable, length)
		if err != nil {
			return Bundle{}, fmt.Errorf("layer %d of version %d: %w", l, v.Number, err)
		}
		b.Names = append(b.Names, KeyName(l), ValueName(l))
		b.Tensors = append(b.Tensors, k, val)
	}
	for name, t := range states {
		b.Names = append(b.Names, name)
		b.Tensors = append(b.Tensors, t)
	}
	return b, b.Validate()
}

// ApplyPaged writes a sequence bundle (PagedSequence) into cache c on top
// of version base, through pageTable (the pages the receiving cache
// allocated for the sequence, enough for its length): one Step with a
// prefill write per layer, so the receiving cache publishes the sequence
// as version base+1, atomically, and no other sequence's pages change. It
// returns the new version.
func ApplyPaged(ctx context.Context, c *actors.Cache, base uint64, pageTable []int32, b Bundle) (uint64, error) {
	length, err := strconv.Atoi(b.Metadata[MetaLength])
	if err != nil {
		return 0, fmt.Errorf("%w: metadata %s = %q is not a length", ErrBundle, MetaLength, b.Metadata[MetaLength])
	}
	layers, err := strconv.Atoi(b.Metadata[MetaLayers])
	if err != nil || layers != c.Layers() {
		return 0, fmt.Errorf("%w: bundle of %q layers for cache %s of %d layers", ErrBundle, b.Metadata[MetaLayers], c.ID(), c.Layers())
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
		writes[l] = actors.LayerWrite{Layer: l, Write: &actors.PagedWrite{PrefillKey: k, PrefillValue: val,
			Step: paged.StepMetadata{PrefillLength: int32(length), PrefillPageTable: pageTable}}}
	}
	v, _, err := c.Step(ctx, base, writes)
	return v, err
}
