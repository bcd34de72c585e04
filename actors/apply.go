package actors

// LayerViews returns version 0's views for s, one per layer, unsharded
// (s.Mesh is not applied): what a cache's layers start from. The
// clustered runtime (actors/cluster) builds its grains' state with it.
func (s Spec) LayerViews() ([]any, error) {
	if _, _, _, err := s.sharded(); err != nil {
		return nil, err
	}
	views, _, err := s.fullViews()
	return views, err
}

// Apply derives a layer's next view from view by w, as the layer's actor
// does in a step, and returns what the write returns to its caller; view
// itself never changes. A write of another kind than view's is an error
// wrapping ErrKind. The clustered runtime's grains apply writes with it,
// so a clustered cache computes exactly what an embedded one does.
func Apply(view any, w Write) (next any, result Result, err error) {
	if w == nil {
		return nil, Result{}, errorf(ErrInvalid, "a nil write")
	}
	return w.apply(view)
}

// ShardedViews returns version 0's views for a spec whose Mesh has more
// than one device: one *Sharded per layer, cut over the mesh as NewCache
// cuts them. A cache keeps this layout (specs and mesh) all its life; the
// clustered runtime places each part on its own grain and cuts writes with
// SplitWrite against it. A spec without such a mesh is an error.
func (s Spec) ShardedViews() ([]*Sharded, error) {
	shard, _, _, err := s.sharded()
	if err != nil {
		return nil, err
	}
	if !shard {
		return nil, errorf(ErrInvalid, "the spec has no mesh of more than one device to shard over")
	}
	views, _, err := s.initialViews()
	if err != nil {
		return nil, err
	}
	out := make([]*Sharded, len(views))
	for l, v := range views {
		out[l] = v.(*Sharded)
	}
	return out, nil
}

// SplitWrite cuts w into one write per device of layout's mesh, in device
// order, as a sharded cache's step does: applying part i to part view i
// of a version with layout's specs, for every i, and joining gives what w
// gives on the full view.
func SplitWrite(w Write, layout *Sharded) ([]Write, error) {
	if w == nil {
		return nil, errorf(ErrInvalid, "a nil write")
	}
	return w.split(layout)
}

// WithParts returns a *Sharded with s's specs, mesh and metadata over
// other part views (one per device, in device order): the layer's view at
// another version.
func (s *Sharded) WithParts(parts []any) (*Sharded, error) {
	if len(parts) != len(s.parts) {
		return nil, errorf(ErrInvalid, "%d part views for a mesh of %d devices", len(parts), len(s.parts))
	}
	return s.with(append([]any(nil), parts...)), nil
}
