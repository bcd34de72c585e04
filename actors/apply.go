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
