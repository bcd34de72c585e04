package lightning

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// ErrSharding reports partition specs that do not fit a view or a mesh, or
// that shard an axis a shard view cannot express, and shard views that do
// not join.
var ErrSharding = errors.New("lightning: bad sharding")

// StateAxes returns the semantic axes of the key_value state (B, H, Dk, Dv):
// [BATCH, HEAD, _, _], the PartitionSpec(batch_axis, head_axis, None, None)
// of EasyDeL's historic lightning init (sharding.LightningStateAxes).
func StateAxes() []string { return sharding.LightningStateAxes() }

// Specs are the partition specs of one view's tensors on a mesh: StateAxes
// resolved with a PartitionAxis in a mode and corrected for the state's
// shape (sharding.ResolveFor), so an axis whose mesh axes are not in the
// mesh or do not divide it is replicated.
type Specs struct {
	// KeyValue is the spec of the key_value state (B, H, Dk, Dv), and of
	// UpdateKeyValue's input.
	KeyValue sharding.Spec
}

// Specs returns the spec of v's key_value state: StateAxes resolved by pa in
// mode and corrected for the state's shape on mesh, which is the state's
// while it is present, else the metadata's. An empty view wraps ErrEmpty; an
// absent state whose metadata leaves a size None, an unknown mode or an
// invalid pa wraps ErrSharding.
func (v View) Specs(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (Specs, error) {
	if err := v.checkNotEmpty("Specs"); err != nil {
		return Specs{}, err
	}
	shape := v.stateShape()
	if err := checkKnown(shape); err != nil {
		return Specs{}, err
	}
	spec, err := sharding.ResolveFor(pa, StateAxes(), mode, shape[:], mesh)
	if err != nil {
		return Specs{}, fmt.Errorf("%w: key_value: %w", ErrSharding, err)
	}
	return Specs{KeyValue: spec}, nil
}

// stateAxisNames names the axes of the key_value state in messages.
var stateAxisNames = [4]string{"batch_size", "heads", "key dim", "value dim"}

// checkKnown reports a state shape with an unknown (0) size.
func checkKnown(shape [4]int) error {
	for i, d := range shape {
		if d == 0 {
			return fmt.Errorf("%w: the key_value shape %v is unknown: the state is absent and the metadata leaves %s None",
				ErrSharding, shape, stateAxisNames[i])
		}
	}
	return nil
}

// UpdateSpecs returns the specs of Update's inputs: key (B, H, T, Dk) and
// value (B, H, T, Dv) cut as the state's batch, heads and dims are, the
// token axis replicated; and the per-head slope rates (H,) cut as the
// heads.
func (s Specs) UpdateSpecs() (key, value, slope sharding.Spec) {
	return s.KeyValue.Pick(0, 1, -1, 2), s.KeyValue.Pick(0, 1, -1, 3), s.KeyValue.Pick(1)
}

// SplitUpdate cuts Update's inputs by UpdateSpecs into one set per device,
// in device order: device i applies keys[i], values[i] and slopes[i] to its
// view of Split. Shapes that do not fit the specs wrap ErrSharding.
func (s Specs) SplitUpdate(key, value tensor.Tensor, slopeRate []float64, mesh sharding.Mesh) (keys, values []tensor.Tensor, slopes [][]float64, err error) {
	ks, vs, ss := s.UpdateSpecs()
	if keys, err = sharding.Split(key, ks, mesh); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: key: %w", ErrSharding, err)
	}
	if values, err = sharding.Split(value, vs, mesh); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: value: %w", ErrSharding, err)
	}
	if slopes, err = sharding.SplitValues(slopeRate, ss, mesh); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: slope rates: %w", ErrSharding, err)
	}
	return keys, values, slopes, nil
}

// shardMeta checks that s fits a state of shape on mesh and returns a
// shard's metadata: every size the metadata gives and the state uses,
// divided by the block count of the axis it sizes (batch_size; num_heads,
// key_heads, value_heads; key_dim, value_dim, head_dim); sizes it leaves
// None stay None.
func (s Specs) shardMeta(meta Metadata, shape [4]int, mesh sharding.Mesh) (Metadata, error) {
	if _, err := sharding.ShardSlices(shape[:], s.KeyValue, mesh); err != nil {
		return Metadata{}, fmt.Errorf("%w: key_value spec %s for shape %v: %w", ErrSharding, s.KeyValue, shape, err)
	}
	var k [4]int
	for i := range k {
		k[i] = s.KeyValue[i].Blocks(mesh)
	}
	m := meta.clone()
	headDimCut := 1 // the cut of the dims head_dim sizes
	switch kd, vd := m.KeyDim == nil, m.ValueDim == nil; {
	case kd && vd && k[2] != k[3]:
		return Metadata{}, fmt.Errorf("%w: key_value spec %s cuts the key dim into %d blocks and the value dim into %d, but head_dim %d sizes both",
			ErrSharding, s.KeyValue, k[2], k[3], *m.HeadDim)
	case kd:
		headDimCut = k[2]
	case vd:
		headDimCut = k[3]
	}
	for _, f := range []struct {
		name string
		p    **int
		used bool
		k    int
	}{
		{"batch_size", &m.BatchSize, true, k[0]},
		{"num_heads", &m.NumHeads, m.KeyHeads == nil || m.ValueHeads == nil, k[1]},
		{"key_heads", &m.KeyHeads, true, k[1]},
		{"value_heads", &m.ValueHeads, true, k[1]},
		{"head_dim", &m.HeadDim, m.KeyDim == nil || m.ValueDim == nil, headDimCut},
		{"key_dim", &m.KeyDim, true, k[2]},
		{"value_dim", &m.ValueDim, true, k[3]},
	} {
		if *f.p == nil || !f.used {
			continue
		}
		if **f.p%f.k != 0 {
			return Metadata{}, fmt.Errorf("%w: metadata %s %d is not divisible by its %d blocks under key_value spec %s",
				ErrSharding, f.name, **f.p, f.k, s.KeyValue)
		}
		x := **f.p / f.k
		*f.p = &x
	}
	return m, nil
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slice of the key_value state (absent when v's is),
// v's dtype and layer index, and metadata sized to its slice (see
// shardMeta: the sizes the metadata gives, divided by their block counts).
// Applying a write to every shard view (Update with its inputs cut by
// SplitUpdate, UpdateKeyValue with its input cut by KeyValue), then
// JoinViews, gives the unsharded write's view byte for byte: the
// recurrence is per row, per head and per element of the state.
//
// The spec must fit the state as it stands (use View.Specs); a spec that
// cuts the key and value dims differently while head_dim sizes both is an
// error. Errors wrap ErrSharding and name the spec. A slice covering the
// whole state shares v's storage; the others are copies.
func (v View) Split(s Specs, mesh sharding.Mesh) ([]View, error) {
	if err := v.checkNotEmpty("Split"); err != nil {
		return nil, err
	}
	shape := v.stateShape()
	if err := checkKnown(shape); err != nil {
		return nil, err
	}
	sm, err := s.shardMeta(v.meta, shape, mesh)
	if err != nil {
		return nil, err
	}
	out := make([]View, mesh.NumDevices())
	for i := range out {
		out[i] = View{dtype: v.dtype, meta: sm.clone(), layer: v.layer}
	}
	if !v.HasKeyValue() {
		return out, nil
	}
	kvs, err := sharding.Split(v.kv, s.KeyValue, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: key_value: %w", ErrSharding, err)
	}
	for i := range out {
		if out[i].kv, err = store.Restore(kvs[i]); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", ErrSharding, i, err)
		}
	}
	return out, nil
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// the key_value states are joined (sharding.Join), or stay absent when
// every shard's is, and the views must agree on dtype and layer index. The
// full state shape is meta's, with a size meta leaves None taken from the
// shards' states. Replicas must hold the same bytes; shard views whose
// shapes do not fit s and meta, a mix of absent and present states, or
// replicas that differ give an error wrapping ErrSharding (and
// sharding.ErrReplicaMismatch for the latter) that names the device.
func JoinViews(parts []View, meta Metadata, s Specs, mesh sharding.Mesh) (View, error) {
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	err := layerlist.CheckParts(ErrSharding, parts, mesh.NumDevices(), func(i int) error {
		p, p0 := parts[i], parts[0]
		if err := layerlist.CheckLayer(ErrSharding, i, p.layer, p0.layer); err != nil {
			return err
		}
		if p.HasKeyValue() != p0.HasKeyValue() {
			return fmt.Errorf("%w: shard view %d has key_value %s, shard view 0 has %s", ErrSharding, i, stateString(p), stateString(p0))
		}
		return nil
	})
	if err != nil {
		return View{}, err
	}
	p0 := parts[0]
	if len(s.KeyValue) != 4 {
		return View{}, fmt.Errorf("%w: key_value spec %s has %d entries, want 4", ErrSharding, s.KeyValue, len(s.KeyValue))
	}
	shape := meta.StateShape()
	if p0.HasKeyValue() {
		for i := range shape {
			if shape[i] == 0 {
				shape[i] = p0.kv.Dim(i) * s.KeyValue[i].Blocks(mesh)
			}
		}
	}
	if err := checkKnown(shape); err != nil {
		return View{}, err
	}
	if _, err := s.shardMeta(meta, shape, mesh); err != nil {
		return View{}, err
	}
	out := View{dtype: p0.dtype, meta: meta.clone(), layer: p0.layer}
	if !p0.HasKeyValue() {
		return out, nil
	}
	kvs := make([]tensor.Tensor, len(parts))
	for i, p := range parts {
		kvs[i] = p.kv
	}
	kv, err := sharding.Join(kvs, s.KeyValue, mesh, shape[:])
	if err != nil {
		return View{}, fmt.Errorf("%w: key_value: %w", ErrSharding, err)
	}
	if out.kv, err = store.Restore(kv); err != nil {
		return View{}, err
	}
	return out, nil
}

// stateString formats a view's key_value for messages: None while absent.
func stateString(v View) string {
	if !v.HasKeyValue() {
		return "None"
	}
	return v.kv.String()
}
