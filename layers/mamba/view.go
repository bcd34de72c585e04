package mamba

import (
	"fmt"
	"slices"

	"github.com/kvmesh/kvmesh/layers/internal/convssm"
	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// layout does the row and column work on a view's conv and SSM states
// (stored one chunk per batch row, so an update of some rows shares the
// other rows' storage), their input checks, sharding and snapshot entries,
// reporting failures with this package's sentinel errors and names.
var layout = convssm.Layout[Metadata]{
	ShardOps: convssm.ShardOps{
		Ops: convssm.Ops{Shape: ErrShape, DType: ErrDType, OutOfRange: ErrOutOfRange, Incompatible: ErrIncompatible, Empty: ErrEmpty,
			Channels: "intermediate_size", SSMAxes: []string{"intermediate_size", "ssm_state_size"}},
		Sharding: ErrSharding,
	},
	Validate:  Metadata.Validate,
	Shapes:    Metadata.stateShapes,
	ShardMeta: shardMeta,
}

// View is one layer's Mamba state: EasyDeL's MambaCacheView. ConvStates is
// (B, intermediate_size, conv_kernel_size) and holds each channel's last K
// raw inputs, oldest in column 0; SSMStates is (B, intermediate_size,
// ssm_state_size). Both have the cache dtype. Positions is (B,) int32, zeros,
// kept for parity with EasyDeL (no method changes it).
//
// The zero View is the empty view (EasyDeL's None entry of a cache); see
// IsEmpty. A View is an immutable value: every update returns a new View and
// leaves the receiver, its tensors and the inputs unchanged (EasyDeL's
// update_conv_state, update_ssm_state and reset mutate the view and return
// None).
type View struct {
	st    convssm.State
	meta  Metadata
	layer layerlist.Index
}

// NewView returns a zero-filled view for meta (EasyDeL's MambaCacheView.init)
// with states of dtype and the given layer index (nil for none). Storage is
// allocated on first write.
//
// Deviation from EasyDeL: there is no partition_specs argument (View.Specs
// gives the sharding for a mesh), and dtype must be given (EasyDeL's cache
// defaults to bfloat16).
func NewView(meta Metadata, dtype tensor.DType, layerIndex *int) (View, error) {
	st, err := layout.New(meta, dtype)
	if err != nil {
		return View{}, err
	}
	return View{st: st, meta: meta.clone(), layer: layerlist.IndexOf(layerIndex)}, nil
}

// IsEmpty reports whether v is the empty view (EasyDeL's None).
func (v View) IsEmpty() bool { return v.st.IsEmpty() }

// ConvStates returns the conv state (B, intermediate_size, conv_kernel_size).
func (v View) ConvStates() tensor.Tensor { return v.st.Conv }

// SSMStates returns the SSM state (B, intermediate_size, ssm_state_size).
func (v View) SSMStates() tensor.Tensor { return v.st.SSM }

// Positions returns a copy of the (B,) positions (zeros).
func (v View) Positions() []int32 { return slices.Clone(v.st.Positions) }

// DType returns the cache dtype (0 for the empty view).
func (v View) DType() tensor.DType { return v.st.DType() }

// Metadata returns the view's metadata.
func (v View) Metadata() Metadata { return v.meta.clone() }

// LayerIndex returns the view's layer index; ok is false when it has none
// (EasyDeL's layer_index=None).
func (v View) LayerIndex() (layer int, ok bool) { return v.layer.Get() }

// String describes the view as EasyDeL's repr does:
// "MambaCacheView(conv_states=float32[2 64 4], ssm_states=float32[2 64 16], layer_index=0)";
// the empty view is "None".
func (v View) String() string {
	if v.IsEmpty() {
		return "None"
	}
	return fmt.Sprintf("MambaCacheView(conv_states=%s, ssm_states=%s, layer_index=%s)", v.st.Conv, v.st.SSM, v.layer)
}

// UpdateConvState returns the view after EasyDeL's update_conv_state with a
// scalar cache_position: the position is clipped to [0, K-1], every row of
// the conv state is rolled left by one along the kernel axis (column k takes
// column (k+1) mod K), then newConvState (B, intermediate_size), converted
// to the cache dtype, is written into the clipped column.
//
// With cachePosition = K-1 this is the decode step of the reference
// recurrence: the window shifts left and the newest input lands in the last
// column. Clipping follows EasyDeL (its tests assert that 10 writes column
// K-1 and -1 writes column 0); a position below K-1 keeps the rolled-over
// old column 0 in column K-1, exactly as jnp.roll does.
//
// Deviation from EasyDeL: the update is functional (EasyDeL mutates the view
// and returns None), and newConvState must have exactly the shape
// (B, intermediate_size) (no broadcasting).
func (v View) UpdateConvState(newConvState tensor.Tensor, cachePosition int) (View, error) {
	return v.with(layout.UpdateConv(v.st, newConvState, cachePosition))
}

// UpdateConvStatePositions is UpdateConvState with an array cache_position
// (EasyDeL's prefill form): after the roll, column clip(cachePositions[j])
// of every row takes newConvState[:, :, j], where newConvState is
// (B, intermediate_size, len(cachePositions)). With cachePositions =
// 0..K-1 and the last K inputs (left-padded with zeros) it sets the whole
// window. When a clipped position repeats, the later one wins (EasyDeL's
// scatter order is unspecified).
func (v View) UpdateConvStatePositions(newConvState tensor.Tensor, cachePositions []int32) (View, error) {
	return v.with(layout.UpdateConvPositions(v.st, newConvState, cachePositions))
}

// with returns v holding st, or err.
func (v View) with(st convssm.State, err error) (View, error) {
	if err != nil {
		return View{}, err
	}
	next := v
	next.st = st
	return next, nil
}

// UpdateSSMState returns the view with the SSM state replaced by
// newSSMState (B, intermediate_size, ssm_state_size), converted to the cache
// dtype (EasyDeL's update_ssm_state, which mutates the view instead).
func (v View) UpdateSSMState(newSSMState tensor.Tensor) (View, error) {
	return v.with(layout.UpdateSSM(v.st, newSSMState))
}

// Reset returns the view with both states zeroed, shapes and dtype kept
// (EasyDeL's reset, which mutates the view and returns None). It allocates
// no state storage.
func (v View) Reset() (View, error) { return v.with(layout.Reset(v.st)) }

// ResetRows returns the view with the states of the given batch rows zeroed
// (a freed decode slot); the other rows share the receiver's storage. Rows
// must be distinct and in range. Not in EasyDeL.
func (v View) ResetRows(rows ...int) (View, error) { return v.with(layout.ResetRows(v.st, rows)) }

// Insert returns the view whose rows [slot, slot+B') hold o's B' rows (conv
// and SSM states and positions), sharing o's storage instead of copying it:
// the transfer of a prefilled sequence into a decode slot. o must have the
// same intermediate, state and kernel sizes and dtype, and fit. Not in
// EasyDeL (its MambaCache has no insert).
func (v View) Insert(o View, slot int) (View, error) { return v.with(layout.Insert(v.st, o.st, slot)) }
