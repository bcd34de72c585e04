package mamba2

import (
	"errors"
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/internal/rowstore"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// ErrSharding reports partition specs that do not fit a view or a mesh, or
// that shard an axis a shard view cannot express, and shard views that do
// not join.
var ErrSharding = errors.New("mamba2: bad sharding")

// rows restores split and joined states into the row-chunked store layout.
var rows = rowstore.Ops{Shape: ErrShape, OutOfRange: ErrOutOfRange, Incompatible: ErrIncompatible}

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

// allShapes returns the full shapes of meta's conv state, SSM state and
// positions.
func allShapes(m Metadata) (conv, ssm, pos []int) {
	conv, ssm = m.stateShapes()
	return conv, ssm, []int{m.BatchSize}
}

// Specs returns the specs of v's tensors: StateAxes and PositionAxes
// resolved by pa in mode and corrected for v's shapes on mesh. An empty view
// wraps ErrEmpty; an unknown mode or an invalid pa wraps ErrSharding and the
// sharding error.
func (v View) Specs(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh) (Specs, error) {
	if err := v.checkNotEmpty("Specs"); err != nil {
		return Specs{}, err
	}
	conv, ssm, pos := allShapes(v.meta)
	var s Specs
	for _, c := range []struct {
		name  string
		dst   *sharding.Spec
		axes  []string
		shape []int
	}{
		{"conv_states", &s.Conv, StateAxes(), conv},
		{"ssm_states", &s.SSM, StateAxes(), ssm},
		{"positions", &s.Positions, PositionAxes(), pos},
	} {
		spec, err := sharding.ResolveFor(pa, c.axes, mode, c.shape, mesh)
		if err != nil {
			return Specs{}, fmt.Errorf("%w: %s: %w", ErrSharding, c.name, err)
		}
		*c.dst = spec
	}
	return s, nil
}

// ColumnSpec returns the spec of UpdateConvState's input (B, conv_dim): the
// conv state's batch and channel entries.
func (s Specs) ColumnSpec() sharding.Spec { return s.Conv.Pick(0, 1) }

// WindowSpec returns the spec of UpdateConvStatePositions's input
// (B, conv_dim, L): the conv state's batch and channel entries, the
// positions axis replicated (the cache positions are the same on every
// shard).
func (s Specs) WindowSpec() sharding.Spec { return s.Conv.Pick(0, 1, -1) }

// shardMeta checks that s fits meta's tensors on mesh and that a shard view
// can hold each device's slices, and returns a shard's metadata: batch_size,
// num_heads and head_dim divided by their block counts, and
// intermediate_size and n_groups by the conv channels' block count.
func (s Specs) shardMeta(meta Metadata, mesh sharding.Mesh) (Metadata, error) {
	conv, ssm, pos := allShapes(meta)
	for _, c := range []struct {
		name  string
		spec  sharding.Spec
		shape []int
	}{{"conv_states", s.Conv, conv}, {"ssm_states", s.SSM, ssm}, {"positions", s.Positions, pos}} {
		if _, err := sharding.ShardSlices(c.shape, c.spec, mesh); err != nil {
			return Metadata{}, fmt.Errorf("%w: %s spec %s for shape %v: %w", ErrSharding, c.name, c.spec, c.shape, err)
		}
	}
	if k := s.Conv[2].Blocks(mesh); k > 1 {
		return Metadata{}, fmt.Errorf("%w: conv_states spec %s cuts the kernel axis (conv_kernel_size %d) into %d blocks over %s; a shard view rolls whole windows",
			ErrSharding, s.Conv, meta.ConvKernelSize, k, s.Conv[2])
	}
	if k := s.SSM[3].Blocks(mesh); k > 1 {
		return Metadata{}, fmt.Errorf("%w: ssm_states spec %s cuts state_size %d into %d blocks over %s; a shard view's state_size also sizes its conv channels",
			ErrSharding, s.SSM, meta.StateSize, k, s.SSM[3])
	}
	if !s.SSM.Pick(0).Equal(s.Conv.Pick(0)) || !s.Positions.Pick(0).Equal(s.Conv.Pick(0)) {
		return Metadata{}, fmt.Errorf("%w: conv_states, ssm_states and positions specs cut the batch over %s, %s and %s; a shard view's states and positions hold the same rows",
			ErrSharding, s.Conv[0], s.SSM[0], s.Positions[0])
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
	if err := v.checkNotEmpty("Split"); err != nil {
		return nil, err
	}
	sm, err := s.shardMeta(v.meta, mesh)
	if err != nil {
		return nil, err
	}
	convs, err := sharding.Split(v.st.Conv, s.Conv, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: conv_states: %w", ErrSharding, err)
	}
	ssms, err := sharding.Split(v.st.SSM, s.SSM, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: ssm_states: %w", ErrSharding, err)
	}
	pos, err := sharding.SplitValues(v.st.Positions, s.Positions, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: positions: %w", ErrSharding, err)
	}
	out := make([]View, len(convs))
	for i := range out {
		if out[i], err = viewOfParts(sm, v, convs[i], ssms[i], pos[i]); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", ErrSharding, i, err)
		}
	}
	return out, nil
}

// viewOfParts assembles a view of meta, with like's seqlen_offset and layer
// index, from states of meta's shapes, in the store layout (shared when
// they already have it, else copied).
func viewOfParts(meta Metadata, like View, conv, ssm tensor.Tensor, pos []int32) (View, error) {
	cs, ss := meta.stateShapes()
	if !conv.HasShape(cs...) || !ssm.HasShape(ss...) || len(pos) != meta.BatchSize || conv.DType() != ssm.DType() {
		return View{}, fmt.Errorf("%w: conv_states %s, ssm_states %s and %d positions, want shapes %v and %v of one dtype and %d positions",
			ErrShape, conv, ssm, len(pos), cs, ss, meta.BatchSize)
	}
	var err error
	if conv, err = rows.Restore(conv); err != nil {
		return View{}, err
	}
	if ssm, err = rows.Restore(ssm); err != nil {
		return View{}, err
	}
	return View{
		st:           convssm.State{Conv: conv, SSM: ssm, Positions: slices.Clone(pos)},
		seqlenOffset: like.seqlenOffset,
		meta:         meta.clone(),
		layer:        like.layer,
		hasLayer:     like.hasLayer,
	}, nil
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
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	if _, err := s.shardMeta(meta, mesh); err != nil {
		return View{}, err
	}
	if len(parts) != mesh.NumDevices() {
		return View{}, fmt.Errorf("%w: %d shard views for a mesh of %d devices", ErrSharding, len(parts), mesh.NumDevices())
	}
	n := len(parts)
	convs, ssms, pos := make([]tensor.Tensor, n), make([]tensor.Tensor, n), make([][]int32, n)
	p0 := parts[0]
	for i, p := range parts {
		if p.IsEmpty() {
			return View{}, fmt.Errorf("%w: shard view %d is empty", ErrSharding, i)
		}
		if p.DType() != p0.DType() {
			return View{}, fmt.Errorf("%w: shard view %d is %s, shard view 0 is %s", ErrSharding, i, p.DType(), p0.DType())
		}
		if p.seqlenOffset != p0.seqlenOffset {
			return View{}, fmt.Errorf("%w: shard view %d has seqlen_offset %d, shard view 0 has %d", ErrSharding, i, p.seqlenOffset, p0.seqlenOffset)
		}
		if p.layer != p0.layer || p.hasLayer != p0.hasLayer {
			return View{}, fmt.Errorf("%w: shard view %d has layer index %s, shard view 0 has %s",
				ErrSharding, i, layerString(p.layer, p.hasLayer), layerString(p0.layer, p0.hasLayer))
		}
		convs[i], ssms[i], pos[i] = p.st.Conv, p.st.SSM, p.st.Positions
	}
	cs, ss, ps := allShapes(meta)
	conv, err := sharding.Join(convs, s.Conv, mesh, cs)
	if err != nil {
		return View{}, fmt.Errorf("%w: conv_states: %w", ErrSharding, err)
	}
	ssm, err := sharding.Join(ssms, s.SSM, mesh, ss)
	if err != nil {
		return View{}, fmt.Errorf("%w: ssm_states: %w", ErrSharding, err)
	}
	positions, err := sharding.JoinValues(pos, s.Positions, mesh, ps[0])
	if err != nil {
		return View{}, fmt.Errorf("%w: positions: %w", ErrSharding, err)
	}
	return viewOfParts(meta, p0, conv, ssm, positions)
}

// layerString formats an optional layer index for messages.
func layerString(l int, ok bool) string {
	if !ok {
		return "None"
	}
	return fmt.Sprint(l)
}
