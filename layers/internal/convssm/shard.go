package convssm

import (
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/sharding"
)

// Specs are the partition specs of a State's tensors on a mesh. The view
// packages' Specs types have the same fields and convert to it.
type Specs struct {
	// Conv is the spec of the (B, C, K) conv state.
	Conv sharding.Spec
	// SSM is the spec of the (B, ...) SSM state.
	SSM sharding.Spec
	// Positions is the spec of the (B,) positions.
	Positions sharding.Spec
}

// ShardOps are the sharding operations on States (the common part of the
// view packages' Specs, Split and JoinViews), reporting failures with one
// cache package's sentinel errors. The shapes they take are the conv and
// SSM state shapes of the view's metadata; the positions have one value per
// batch row, convShape[0].
type ShardOps struct {
	// Ops supplies Shape, wrapped by errors about states of the wrong shape
	// or dtype, and the errors of restoring the store layout.
	Ops
	// Sharding is wrapped by errors about specs that do not fit a State or
	// a mesh, and parts that do not join.
	Sharding error
}

// Resolve returns the specs of a State of the given shapes: stateAxes (for
// both states) and posAxes resolved by pa in mode and corrected for the
// shapes on mesh (sharding.ResolveFor). Failures wrap o.Sharding, name the
// tensor ("conv_states: ...") and wrap the sharding error.
func (o ShardOps) Resolve(pa sharding.PartitionAxis, mode sharding.Mode, mesh sharding.Mesh, stateAxes, posAxes []string, convShape, ssmShape []int) (Specs, error) {
	var s Specs
	for _, c := range []struct {
		name  string
		dst   *sharding.Spec
		axes  []string
		shape []int
	}{
		{"conv_states", &s.Conv, stateAxes, convShape},
		{"ssm_states", &s.SSM, stateAxes, ssmShape},
		{"positions", &s.Positions, posAxes, []int{convShape[0]}},
	} {
		spec, err := sharding.ResolveFor(pa, c.axes, mode, c.shape, mesh)
		if err != nil {
			return Specs{}, fmt.Errorf("%w: %s: %w", o.Sharding, c.name, err)
		}
		*c.dst = spec
	}
	return s, nil
}

// CheckFit checks that s fits a State of the given shapes on mesh
// (sharding.ShardSlices) and leaves the conv kernel axis whole, as a shard
// view rolls whole windows. Failures wrap o.Sharding and name the spec.
func (o ShardOps) CheckFit(s Specs, convShape, ssmShape []int, mesh sharding.Mesh) error {
	for _, c := range []struct {
		name  string
		spec  sharding.Spec
		shape []int
	}{{"conv_states", s.Conv, convShape}, {"ssm_states", s.SSM, ssmShape}, {"positions", s.Positions, []int{convShape[0]}}} {
		if _, err := sharding.ShardSlices(c.shape, c.spec, mesh); err != nil {
			return fmt.Errorf("%w: %s spec %s for shape %v: %w", o.Sharding, c.name, c.spec, c.shape, err)
		}
	}
	if k := s.Conv[2].Blocks(mesh); k > 1 {
		return fmt.Errorf("%w: conv_states spec %s cuts the kernel axis (conv_kernel_size %d) into %d blocks over %s; a shard view rolls whole windows",
			o.Sharding, s.Conv, convShape[2], k, s.Conv[2])
	}
	return nil
}

// CheckBatch checks that s cuts the batch alike for both states and the
// positions, as a shard view's states and positions hold the same rows.
// The failure wraps o.Sharding.
func (o ShardOps) CheckBatch(s Specs) error {
	if !s.SSM.Pick(0).Equal(s.Conv.Pick(0)) || !s.Positions.Pick(0).Equal(s.Conv.Pick(0)) {
		return fmt.Errorf("%w: conv_states, ssm_states and positions specs cut the batch over %s, %s and %s; a shard view's states and positions hold the same rows",
			o.Sharding, s.Conv[0], s.SSM[0], s.Positions[0])
	}
	return nil
}

// Split cuts st by s over mesh into one State per device, in device order,
// each of a shard's shapes convShape and ssmShape (the caller checks s
// first: CheckFit, CheckBatch and its own rules). Slices covering a whole
// state share st's storage; the others are copies. Failures wrap
// o.Sharding and name the tensor or the shard.
func (o ShardOps) Split(st State, s Specs, mesh sharding.Mesh, convShape, ssmShape []int) ([]State, error) {
	convs, err := sharding.Split(st.Conv, s.Conv, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: conv_states: %w", o.Sharding, err)
	}
	ssms, err := sharding.Split(st.SSM, s.SSM, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: ssm_states: %w", o.Sharding, err)
	}
	pos, err := sharding.SplitValues(st.Positions, s.Positions, mesh)
	if err != nil {
		return nil, fmt.Errorf("%w: positions: %w", o.Sharding, err)
	}
	out := make([]State, len(convs))
	for i := range out {
		if out[i], err = o.assemble(convs[i], ssms[i], pos[i], convShape, ssmShape); err != nil {
			return nil, fmt.Errorf("%w: shard %d: %w", o.Sharding, i, err)
		}
	}
	return out, nil
}

// Join rebuilds the State of the full shapes convShape and ssmShape that
// Split cut by s over mesh from one part per device, in device order
// (sharding.Join, sharding.JoinValues). The parts must pass
// layerlist.CheckParts with agree (the caller's check of the view fields a
// State does not hold, e.g. the layer index), whose error is returned as it
// is. Replicas must
// hold the same bytes (else the error also wraps
// sharding.ErrReplicaMismatch). Failures wrap o.Sharding and name the part
// or the tensor; a joined state of the wrong shape wraps o.Shape.
func (o ShardOps) Join(parts []State, s Specs, mesh sharding.Mesh, convShape, ssmShape []int, agree func(i int) error) (State, error) {
	if err := layerlist.CheckParts(o.Sharding, parts, mesh.NumDevices(), agree); err != nil {
		return State{}, err
	}
	n := len(parts)
	convs, ssms, pos := make([]tensor.Tensor, n), make([]tensor.Tensor, n), make([][]int32, n)
	for i, p := range parts {
		convs[i], ssms[i], pos[i] = p.Conv, p.SSM, p.Positions
	}
	conv, err := sharding.Join(convs, s.Conv, mesh, convShape)
	if err != nil {
		return State{}, fmt.Errorf("%w: conv_states: %w", o.Sharding, err)
	}
	ssm, err := sharding.Join(ssms, s.SSM, mesh, ssmShape)
	if err != nil {
		return State{}, fmt.Errorf("%w: ssm_states: %w", o.Sharding, err)
	}
	positions, err := sharding.JoinValues(pos, s.Positions, mesh, convShape[0])
	if err != nil {
		return State{}, fmt.Errorf("%w: positions: %w", o.Sharding, err)
	}
	return o.assemble(conv, ssm, positions, convShape, ssmShape)
}

// assemble returns the State of conv, ssm (of shapes convShape and
// ssmShape and one dtype) and a copy of pos (one value per batch row), the
// states in the store layout (shared when they already have it, else
// copied). Failures wrap o.Shape.
func (o ShardOps) assemble(conv, ssm tensor.Tensor, pos []int32, convShape, ssmShape []int) (State, error) {
	if !conv.HasShape(convShape...) || !ssm.HasShape(ssmShape...) || len(pos) != convShape[0] || conv.DType() != ssm.DType() {
		return State{}, fmt.Errorf("%w: conv_states %s, ssm_states %s and %d positions, want shapes %v and %v of one dtype and %d positions",
			o.Shape, conv, ssm, len(pos), convShape, ssmShape, convShape[0])
	}
	rows := o.store()
	var err error
	if conv, err = rows.Restore(conv); err != nil {
		return State{}, err
	}
	if ssm, err = rows.Restore(ssm); err != nil {
		return State{}, err
	}
	return State{Conv: conv, SSM: ssm, Positions: slices.Clone(pos)}, nil
}
