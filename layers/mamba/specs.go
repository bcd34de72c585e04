package mamba

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/sharding"
)

// ErrSharding reports partition specs that do not fit a view or a mesh, or
// that shard an axis a shard view cannot express, and shard views that do
// not join.
var ErrSharding = errors.New("mamba: bad sharding")

// StateAxes returns the semantic axes of the conv state (B, I, K) and of
// the SSM state (B, I, N): [BATCH, HEAD, LENGTH], EasyDeL's default
// PartitionSpec(batch_axis, head_axis, sequence_axis) for Mamba states
// (sharding.RecurrentStateAxes).
func StateAxes() []string { return sharding.RecurrentStateAxes() }

// PositionAxes returns the semantic axes of the positions (B,): [BATCH]
// (kvmesh's choice, as sharding.MambaShape budgets them; EasyDeL does not
// shard them explicitly).
func PositionAxes() []string { return sharding.TransformerIndexAxes() }

// Specs are the partition specs of one view's tensors on a mesh: StateAxes
// and PositionAxes resolved with a PartitionAxis in a mode and corrected for
// the view's shapes (sharding.ResolveFor), so an axis whose mesh axes are
// not in the mesh or do not divide it is replicated.
type Specs struct {
	// Conv is the spec of the conv state (B, intermediate_size,
	// conv_kernel_size).
	Conv sharding.Spec
	// SSM is the spec of the SSM state (B, intermediate_size,
	// ssm_state_size), and of UpdateSSMState's input.
	SSM sharding.Spec
	// Positions is the spec of the positions (B,).
	Positions sharding.Spec
}

// Specs returns the specs of v's tensors: StateAxes and PositionAxes
// resolved by pa in mode and corrected for v's shapes on mesh. An empty view
// wraps ErrEmpty; an unknown mode or an invalid pa wraps ErrSharding and the
// sharding error.
func (v View) Specs(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (Specs, error) {
	s, err := layout.Specs(v.st, v.meta, pa, mode, mesh, StateAxes(), PositionAxes())
	return Specs(s), err
}

// ColumnSpec returns the spec of UpdateConvState's input (B,
// intermediate_size): the conv state's batch and channel entries.
func (s Specs) ColumnSpec() sharding.Spec { return s.Conv.Pick(0, 1) }

// WindowSpec returns the spec of UpdateConvStatePositions's input (B,
// intermediate_size, L): the conv state's batch and channel entries, the
// positions axis replicated (the cache positions are the same on every
// shard).
func (s Specs) WindowSpec() sharding.Spec { return s.Conv.Pick(0, 1, -1) }

// shardMeta checks with o that s fits meta's tensors on mesh and that a
// shard view can hold each device's slices, and returns a shard's
// metadata: batch_size, intermediate_size and ssm_state_size divided by
// their block counts.
func shardMeta(o convssm.ShardOps, meta Metadata, s convssm.Specs, mesh sharding.Mesh) (Metadata, error) {
	conv, ssm := meta.stateShapes()
	if err := o.CheckFit(s, conv, ssm, mesh); err != nil {
		return Metadata{}, err
	}
	if err := o.CheckBatch(s); err != nil {
		return Metadata{}, err
	}
	if !s.SSM.Pick(1).Equal(s.Conv.Pick(1)) {
		return Metadata{}, fmt.Errorf("%w: conv_states spec cuts intermediate_size over %s but ssm_states spec over %s; a shard view has one intermediate_size",
			ErrSharding, s.Conv[1], s.SSM[1])
	}
	m := meta.clone()
	m.BatchSize /= s.Conv[0].Blocks(mesh)
	m.IntermediateSize /= s.Conv[1].Blocks(mesh)
	m.SSMStateSize /= s.SSM[2].Blocks(mesh)
	return m, nil
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slices of the conv and SSM states and of the
// positions, with metadata sized to them (batch_size, intermediate_size and
// ssm_state_size divided by their block counts) and v's layer index.
// Applying a write to every shard view (UpdateConvState with its input cut
// by ColumnSpec, UpdateConvStatePositions by WindowSpec, UpdateSSMState by
// SSM, with the same cache positions), then JoinViews, gives the unsharded
// write's view byte for byte: the updates are per row and per channel.
//
// The specs must fit v's shapes as they stand (use View.Specs), cut the
// batch alike for all three and the channels alike for both states, and
// leave the conv kernel axis whole (a shard view rolls whole windows: the
// default LENGTH rule shards it over sp when sp divides conv_kernel_size);
// otherwise the error wraps ErrSharding and names the spec. Slices covering
// a whole state share v's storage; the others are copies.
func (v View) Split(s Specs, mesh sharding.Mesh) ([]View, error) {
	sm, parts, err := layout.Split(v.st, v.meta, convssm.Specs(s), mesh)
	if err != nil {
		return nil, err
	}
	out := make([]View, len(parts))
	for i, st := range parts {
		out[i] = View{st: st, meta: sm.clone(), layer: v.layer}
	}
	return out, nil
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// the states and positions are joined (sharding.Join,
// sharding.JoinValues), and the views must agree on dtype and layer index.
// Replicas must hold the same bytes; shard views whose shapes do not fit s
// and meta, or replicas that differ, give an error wrapping ErrSharding (and
// sharding.ErrReplicaMismatch for the latter) that names the device.
func JoinViews(parts []View, meta Metadata, s Specs, mesh sharding.Mesh) (View, error) {
	sts := make([]convssm.State, len(parts))
	for i, p := range parts {
		sts[i] = p.st
	}
	st, err := layout.Join(sts, meta, convssm.Specs(s), mesh, func(i int) error {
		return layerlist.CheckLayer(ErrSharding, i, parts[i].layer, parts[0].layer)
	})
	if err != nil {
		return View{}, err
	}
	return View{st: st, meta: meta.clone(), layer: parts[0].layer}, nil
}
