package actors

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// Sharded is one layer's view of a sharded cache: the view cut over a
// device mesh, one part view per device (in the mesh's device order), each
// owned by the layer's shard actor of that device. It is what Version.Views
// holds for every layer of a cache created with a mesh of more than one
// device. Like every view it is immutable; Join rebuilds the full view.
//
// The part views and the full metadata are values of the layer's kind:
// transformer.View and transformer.Metadata (specs transformer.Specs), or
// the paged, mamba, mamba2 or lightning equivalents.
type Sharded struct {
	parts []any
	specs any
	mesh  sharding.Mesh
	meta  any
}

// Parts returns the part views, one per device in device order (a fresh
// slice; the views themselves are immutable and shared).
func (s *Sharded) Parts() []any { return append([]any(nil), s.parts...) }

// Specs returns the partition specs the view is cut by (transformer.Specs,
// paged.Specs, mamba.Specs, mamba2.Specs or lightning.Specs).
func (s *Sharded) Specs() any { return s.specs }

// Mesh returns the device mesh.
func (s *Sharded) Mesh() sharding.Mesh { return s.mesh }

// Metadata returns the full (unsharded) view's metadata
// (transformer.Metadata, paged.Metadata, ...).
func (s *Sharded) Metadata() any { return s.meta }

// with returns s with other part views: the next version of the layer.
func (s *Sharded) with(parts []any) *Sharded {
	return &Sharded{parts: parts, specs: s.specs, mesh: s.mesh, meta: s.meta}
}

// Join rebuilds the full view from the parts (the kind's JoinViews): a
// transformer.View, paged.View, mamba.View, mamba2.View or lightning.View,
// byte for byte the view an unsharded cache driven with the same writes
// holds. It copies every part into a new dense view, so its cost is that of
// the whole layer: a reader's operation, never a step's.
//
// A contiguous layer is joined from the positions its version can see
// (row b's positions below its index), in its stored form (an int8 or NF4
// layer's codes and scales, verbatim); the unspecified positions past a
// row's index read as zeros in the result. They are not read at all: a
// later step may be appending there in place, in storage this version
// shares, at the same moment. A paged layer has no such bound (which pool
// offsets hold data is the page tables' business), so joining it reads
// whole pages: while steps run on the cache, read a paged layer's
// sequences with Gather instead, which reads only their tokens.
func (s *Sharded) Join() (any, error) {
	switch specs := s.specs.(type) {
	case transformer.Specs:
		return joinAs(s, specs, func(parts []transformer.View, meta transformer.Metadata, specs transformer.Specs, mesh sharding.Mesh) (transformer.View, error) {
			for i, p := range parts {
				var err error
				if parts[i], err = visibleView(p); err != nil {
					return transformer.View{}, fmt.Errorf("part %d: %w", i, err)
				}
			}
			return transformer.JoinViews(parts, meta, specs, mesh)
		})
	case paged.Specs:
		return joinAs(s, specs, paged.JoinViews)
	case mamba.Specs:
		return joinAs(s, specs, mamba.JoinViews)
	case mamba2.Specs:
		return joinAs(s, specs, mamba2.JoinViews)
	case lightning.Specs:
		return joinAs(s, specs, lightning.JoinViews)
	}
	return nil, errorf(ErrInternal, "a sharded view with specs of type %T", s.specs)
}

// joinAs is Join for one kind: V the view type, M its metadata, S its specs.
func joinAs[V, M, S any](s *Sharded, specs S, join func([]V, M, S, sharding.Mesh) (V, error)) (any, error) {
	meta, ok := s.meta.(M)
	if !ok {
		return nil, errorf(ErrInternal, "a sharded view with metadata of type %T", s.meta)
	}
	parts, err := partsAs[V](s.parts)
	if err != nil {
		return nil, err
	}
	return join(parts, meta, specs, s.mesh)
}

// partsAs converts part views to their kind's view type.
func partsAs[V any](parts []any) ([]V, error) {
	out := make([]V, len(parts))
	for i, p := range parts {
		v, ok := p.(V)
		if !ok {
			var want V
			return nil, errorf(ErrInternal, "part view %d is a %T, want a %T", i, p, want)
		}
		out[i] = v
	}
	return out, nil
}

// Layer returns layer l's full view: Views[l] itself for an unsharded
// cache, or Views[l].(*Sharded).Join() for a sharded one (which copies the
// layer, see Sharded.Join).
//
// Positions a version cannot see (a contiguous row's positions past its
// index, pool offsets of a paged layer that no write of the version
// reached) are unspecified, and a step running at the same time may be
// filling them in place: while steps run, read only what the version can
// see (a transformer view's rows below their index, a paged view's
// sequences through Gather).
func (v Version) Layer(l int) (any, error) {
	if l < 0 || l >= len(v.Views) {
		return nil, errorf(ErrInvalid, "layer %d out of range (version %d has %d layers)", l, v.Number, len(v.Views))
	}
	s, ok := v.Views[l].(*Sharded)
	if !ok {
		return v.Views[l], nil
	}
	full, err := s.Join()
	if err != nil {
		return nil, fmt.Errorf("version %d, layer %d: %w", v.Number, l, err)
	}
	return full, nil
}

// shardView cuts one of version 0's views over mesh by its specs for pa in
// mode (the kind's View.Specs and View.Split).
func shardView(view any, pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (*Sharded, error) {
	switch v := view.(type) {
	case transformer.View:
		return splitAs(v.Specs, v.Split, v.Metadata(), pa, mode, mesh)
	case paged.View:
		return splitAs(v.Specs, v.Split, v.Metadata(), pa, mode, mesh)
	case mamba.View:
		return splitAs(v.Specs, v.Split, v.Metadata(), pa, mode, mesh)
	case mamba2.View:
		return splitAs(v.Specs, v.Split, v.Metadata(), pa, mode, mesh)
	case lightning.View:
		return splitAs(v.Specs, v.Split, v.Metadata(), pa, mode, mesh)
	}
	return nil, errorf(ErrInternal, "cannot shard a %T", view)
}

// splitAs is shardView for one kind.
func splitAs[V, M, S any](specsOf func(sharding.PartitionAxis, sharding.Mode, sharding.Mesh) (S, error), split func(S, sharding.Mesh) ([]V, error),
	meta M, pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (*Sharded, error) {
	specs, err := specsOf(pa, mode, mesh)
	if err != nil {
		return nil, err
	}
	views, err := split(specs, mesh)
	if err != nil {
		return nil, err
	}
	parts := make([]any, len(views))
	for i, p := range views {
		parts[i] = p
	}
	return &Sharded{parts: parts, specs: specs, mesh: mesh, meta: meta}, nil
}

// visibleView returns a copy of v that holds only what v's version can
// see, row b's positions below Index()[b], and zeros past them, stored as
// v stores them: values, or a quantized view's codes and scales, copied
// verbatim (never dequantized and quantized again).
func visibleView(v transformer.View) (transformer.View, error) {
	index := v.Index()
	var layer *int
	if l, ok := v.LayerIndex(); ok {
		layer = &l
	}
	pv := storedPure(v, layer)
	for _, t := range []*tensor.Tensor{&pv.Key, &pv.Value, &pv.KeyScales, &pv.ValueScales} {
		if t.IsZero() {
			continue // an unquantized view has no scales
		}
		var err error
		if *t, err = visibleRows(*t, index); err != nil {
			return transformer.View{}, err
		}
	}
	c, err := transformer.FromPure(transformer.Pure{pv}, v.Metadata())
	if err != nil {
		return transformer.View{}, err
	}
	return c.View(0)
}

// visibleRows copies the first index[b] positions of each row b of a
// (B, S, H, W) cache tensor (values, codes or scales) into a fresh tensor,
// reading nothing else.
func visibleRows(t tensor.Tensor, index []int32) (tensor.Tensor, error) {
	out, err := tensor.New(t.DType(), t.Shape()...)
	if err != nil {
		return tensor.Tensor{}, err
	}
	e := out.Edit()
	S, row := t.Dim(1), t.Dim(2)*t.Dim(3)
	for b, n := range index {
		if n > 0 {
			if err := e.Write(b*S*row, t, b*S*row, int(n)*row); err != nil {
				return tensor.Tensor{}, err
			}
		}
	}
	return e.Tensor(), nil
}

// Gather reads one sequence of a sharded paged layer: each device's part
// gathers the sequence's first length tokens through pageTable
// (paged.View.Gather), and the parts are joined by the kv-head spec into
// key and value tensors of shape (length, Hkv, D), exactly what Gather on
// the unsharded view returns. It reads only those tokens, so it is safe
// while steps run on the cache.
func (s *Sharded) Gather(pageTable []int32, length int) (k, v tensor.Tensor, err error) {
	specs, ok := s.specs.(paged.Specs)
	if !ok {
		return k, v, errorf(ErrKind, "Gather of a sharded %T layer (only paged layers have page tables)", s.meta)
	}
	parts, err := partsAs[paged.View](s.parts)
	if err != nil {
		return k, v, err
	}
	keys, values := make([]tensor.Tensor, len(parts)), make([]tensor.Tensor, len(parts))
	for i, p := range parts {
		if keys[i], values[i], err = p.Gather(pageTable, length); err != nil {
			return k, v, fmt.Errorf("device %d: %w", i, err)
		}
	}
	meta := s.meta.(paged.Metadata)
	ks, vs := specs.TokenSpecs()
	if k, err = sharding.Join(keys, ks, s.mesh, []int{length, meta.NumKVHeads, meta.KVHeadDimSize}); err != nil {
		return k, v, fmt.Errorf("%w: gathered keys: %w", paged.ErrSharding, err)
	}
	if v, err = sharding.Join(values, vs, s.mesh, []int{length, meta.NumKVHeads, meta.KVHeadDimSize}); err != nil {
		return k, v, fmt.Errorf("%w: gathered values: %w", paged.ErrSharding, err)
	}
	return k, v, nil
}
