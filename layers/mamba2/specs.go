package mamba2

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
var ErrSharding = errors.New("mamba2: bad sharding")

// StateAxes returns the semantic axes of the conv state (B, conv_dim, K)
// and of the SSM state (B, H, P, N): [BATCH, HEAD, LENGTH], EasyDeL's
// default PartitionSpec(batch_axis, head_axis, sequence_axis) for Mamba2
// states (sharding.RecurrentStateAxes). The rank-4 SSM state's spec is
// padded with None, so its head_dim axis P takes the LENGTH rule.
func StateAxes() []string { return sharding.RecurrentStateAxes() }

// PositionAxes returns the semantic axes of the positions (B,): [BATCH]
// (kvmesh's choice, as sharding.Mamba2Shape budgets them).
func PositionAxes() []string { return sharding.TransformerIndexAxes() }

// Specs are the partition specs of one view's tensors on a mesh: StateAxes
// and PositionAxes resolved with a PartitionAxis in a mode and corrected for
// the view's shapes (sharding.ResolveFor), so an axis whose mesh axes are
// not in the mesh or do not divide it is replicated. The seqlen_offset, a
// scalar, is replicated.
type Specs struct {
	// Conv is the spec of the conv state (B, conv_dim, conv_kernel_size).
	Conv sharding.Spec
	// SSM is the spec of the SSM state (B, num_heads, head_dim,
	// state_size), and of UpdateSSMState's input.
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

// ColumnSpec returns the spec of UpdateConvState's input (B, conv_dim): the
// conv state's batch and channel entries.
func (s Specs) ColumnSpec() sharding.Spec { return s.Conv.Pick(0, 1) }

// WindowSpec returns the spec of UpdateConvStatePositions's input
// (B, conv_dim, L): the conv state's batch and channel entries, the
// positions axis replicated (the cache positions are the same on every
// shard).
func (s Specs) WindowSpec() sharding.Spec { return s.Conv.Pick(0, 1, -1) }

// shardMeta checks with o that s fits meta's tensors on mesh and that a
// shard view can hold each device's slices, and returns a shard's
// metadata: batch_size, num_heads and head_dim divided by their block
// counts, and intermediate_size and n_groups by the conv channels' block
// count.
func shardMeta(o convssm.ShardOps, meta Metadata, s convssm.Specs, mesh sharding.Mesh) (Metadata, error) {
	conv, ssm := meta.stateShapes()
	if err := o.CheckFit(s, conv, ssm, mesh); err != nil {
		return Metadata{}, err
	}
	if k := s.SSM[3].Blocks(mesh); k > 1 {
		return Metadata{}, fmt.Errorf("%w: ssm_states spec %s cuts state_size %d into %d blocks over %s; a shard view's state_size also sizes its conv channels",
			ErrSharding, s.SSM, meta.StateSize, k, s.SSM[3])
	}
	if err := o.CheckBatch(s); err != nil {
		return Metadata{}, err
	}
	kc := s.Conv[1].Blocks(mesh)
	if meta.IntermediateSize%kc != 0 || meta.NGroups%kc != 0 {
		return Metadata{}, fmt.Errorf("%w: conv_states spec %s cuts conv_dim %d into %d blocks over %s, but %d does not divide intermediate_size %d and n_groups %d, so a shard's channels have no (intermediate_size, n_groups) layout",
			ErrSharding, s.Conv, meta.ConvDim(), kc, s.Conv[1], kc, meta.IntermediateSize, meta.NGroups)
	}
	m := meta.clone()
	m.BatchSize /= s.Conv[0].Blocks(mesh)
	m.IntermediateSize /= kc
	m.NGroups /= kc
	m.NumHeads /= s.SSM[1].Blocks(mesh)
	m.HeadDim /= s.SSM[2].Blocks(mesh)
	return m, nil
}

// Split cuts v by s over mesh into one view per device, in device order:
// view i holds device i's slices of the conv and SSM states and of the
// positions, v's seqlen_offset and layer index, and metadata sized to its
// slices: batch_size, num_heads and head_dim divided by their block counts,
// intermediate_size and n_groups by the conv channels' block count k
// (conv_dim / k = intermediate_size / k + 2·(n_groups / k)·state_size).
// Applying a write to every shard view (UpdateConvState with its input cut
// by ColumnSpec, UpdateConvStatePositions by WindowSpec, UpdateSSMState by
// SSM, UpdateSeq with the same count), then JoinViews, gives the unsharded
// write's view byte for byte: the updates are per row, per channel and per
// element.
//
// As under JAX with this spec, a shard holds a contiguous block of the
// concatenated [x | B | C] channels, not the x, B and C channels of its own
// heads: its metadata describes the shapes it stores, and a mixer that
// needs per-head channels must lay them out itself.
//
// The specs must fit v's shapes as they stand (use View.Specs), cut the
// batch alike for the states and positions, leave the conv kernel axis and
// state_size whole, and cut conv_dim only into a number of blocks that
// divides intermediate_size and n_groups; otherwise the error wraps
// ErrSharding and names the spec. Slices covering a whole state share v's
// storage; the others are copies.
func (v View) Split(s Specs, mesh sharding.Mesh) ([]View, error) {
	sm, parts, err := layout.Split(v.st, v.meta, convssm.Specs(s), mesh)
	if err != nil {
		return nil, err
	}
	out := make([]View, len(parts))
	for i, st := range parts {
		out[i] = v.withParts(sm, st)
	}
	return out, nil
}

// withParts returns a view of meta holding st, with v's seqlen_offset and
// layer index.
func (v View) withParts(meta Metadata, st convssm.State) View {
	return View{st: st, seqlenOffset: v.seqlenOffset, meta: meta.clone(), layer: v.layer}
}

// JoinViews rebuilds the view that Split cut by s over mesh from one shard
// view per device (in device order), meta being the full view's metadata:
// the states and positions are joined (sharding.Join,
// sharding.JoinValues), and the views must agree on dtype, seqlen_offset and
// layer index. Replicas must hold the same bytes; shard views whose shapes
// do not fit s and meta, or replicas that differ, give an error wrapping
// ErrSharding (and sharding.ErrReplicaMismatch for the latter) that names
// the device.
func JoinViews(parts []View, meta Metadata, s Specs, mesh sharding.Mesh) (View, error) {
	sts := make([]convssm.State, len(parts))
	for i, p := range parts {
		sts[i] = p.st
	}
	st, err := layout.Join(sts, meta, convssm.Specs(s), mesh, func(i int) error {
		p, p0 := parts[i], parts[0]
		if p.seqlenOffset != p0.seqlenOffset {
			return fmt.Errorf("%w: shard view %d has seqlen_offset %d, shard view 0 has %d", ErrSharding, i, p.seqlenOffset, p0.seqlenOffset)
		}
		return layerlist.CheckLayer(ErrSharding, i, p.layer, p0.layer)
	})
	if err != nil {
		return View{}, err
	}
	return parts[0].withParts(meta, st), nil
}
