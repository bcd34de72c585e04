package mamba2

import (
	"fmt"
	"math"
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
			Channels: "conv_dim", SSMAxes: []string{"num_heads", "head_dim", "state_size"}},
		Sharding: ErrSharding,
	},
	Validate:  Metadata.Validate,
	Shapes:    Metadata.stateShapes,
	ShardMeta: shardMeta,
}

// View is one layer's Mamba2 state: EasyDeL's Mamba2CacheView. ConvStates
// is (B, intermediate_size + 2·n_groups·state_size, conv_kernel_size) and
// holds the last K raw [x | B | C] inputs of every channel, oldest in column
// 0; SSMStates is (B, num_heads, head_dim, state_size). Both have the cache
// dtype. Positions is (B,) int32 and SeqlenOffset an int; UpdateSeq advances
// both.
//
// The zero View is the empty view (EasyDeL's None entry of a cache); see
// IsEmpty. A View is an immutable value: every update returns a new View and
// leaves the receiver, its tensors and the inputs unchanged (EasyDeL's
// update_conv_state, update_ssm_state and reset mutate the view and return
// it).
type View struct {
	st           convssm.State
	seqlenOffset int
	meta         Metadata
	layer        layerlist.Index
}

// NewView returns a zero-filled view for meta (EasyDeL's
// Mamba2CacheView.init) with states of dtype, positions and seqlen_offset
// zero and the given layer index (nil for none). Storage is allocated on
// first write.
//
// Deviation from EasyDeL: there is no partition_specs argument, and dtype
// must be given (EasyDeL's cache defaults to bfloat16).
func NewView(meta Metadata, dtype tensor.DType, layerIndex *int) (View, error) {
	st, err := layout.New(meta, dtype)
	if err != nil {
		return View{}, err
	}
	return View{st: st, meta: meta.clone(), layer: layerlist.IndexOf(layerIndex)}, nil
}

// IsEmpty reports whether v is the empty view (EasyDeL's None).
func (v View) IsEmpty() bool { return v.st.IsEmpty() }

// ConvStates returns the conv state (B, intermediate_size + 2·n_groups·state_size,
// conv_kernel_size).
func (v View) ConvStates() tensor.Tensor { return v.st.Conv }

// SSMStates returns the SSM state (B, num_heads, head_dim, state_size).
func (v View) SSMStates() tensor.Tensor { return v.st.SSM }

// Positions returns a copy of the (B,) positions.
func (v View) Positions() []int32 { return slices.Clone(v.st.Positions) }

// SeqlenOffset returns the number of tokens UpdateSeq has counted; a mixer
// takes the decode path when it is positive (EasyDeL's seqlen_offset).
func (v View) SeqlenOffset() int { return v.seqlenOffset }

// DType returns the cache dtype (0 for the empty view).
func (v View) DType() tensor.DType { return v.st.DType() }

// Metadata returns the view's metadata.
func (v View) Metadata() Metadata { return v.meta.clone() }

// LayerIndex returns the view's layer index; ok is false when it has none
// (EasyDeL's layer_index=None).
func (v View) LayerIndex() (layer int, ok bool) { return v.layer.Get() }

// String describes the view as "Mamba2CacheView(conv_states=float32[2 96 4],
// ssm_states=float32[2 4 16 16], positions=int32[2], seqlen_offset=0,
// layer_index=0)"; the empty view is "None".
func (v View) String() string {
	if v.IsEmpty() {
		return "None"
	}
	return fmt.Sprintf("Mamba2CacheView(conv_states=%s, ssm_states=%s, positions=int32[%d], seqlen_offset=%d, layer_index=%s)",
		v.st.Conv, v.st.SSM, len(v.st.Positions), v.seqlenOffset, v.layer)
}

// UpdateConvState returns the view after EasyDeL's update_conv_state with a
// scalar cache_position: the position is clipped to [0, K-1], every row of
// the conv state is rolled left by one along the kernel axis (column k takes
// column (k+1) mod K), then newConvState (B, conv_dim), converted to the
// cache dtype, is written into the clipped column. conv_dim is
// Metadata.ConvDim.
//
// With cachePosition = K-1 this is the decode step of the reference
// recurrence: the window shifts left and the newest [x | B | C] input lands
// in the last column. Clipping follows EasyDeL (its tests assert that 10
// writes column K-1 and -1 writes column 0).
//
// Deviation from EasyDeL: the update is functional (EasyDeL mutates the view),
// and newConvState must have exactly the shape (B, conv_dim).
func (v View) UpdateConvState(newConvState tensor.Tensor, cachePosition int) (View, error) {
	return v.with(layout.UpdateConv(v.st, newConvState, cachePosition))
}

// UpdateConvStatePositions is UpdateConvState with an array cache_position
// (EasyDeL's prefill form): after the roll, column clip(cachePositions[j])
// of every row takes newConvState[:, :, j], where newConvState is
// (B, conv_dim, len(cachePositions)). With cachePositions = 0..K-1 and the
// last K inputs (left-padded with zeros) it sets the whole window. When a
// clipped position repeats, the later one wins.
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
// newSSMState (B, num_heads, head_dim, state_size), converted to the cache
// dtype (EasyDeL's update_ssm_state, which mutates the view instead).
func (v View) UpdateSSMState(newSSMState tensor.Tensor) (View, error) {
	return v.with(layout.UpdateSSM(v.st, newSSMState))
}

// UpdateSeq returns the view with every position and the seqlen offset
// advanced by num (EasyDeL's Mamba2Cache.update_seq on one view, which
// mutates it). A mixer calls it once per forward call, so after a prefill
// the offset is 1, not the prompt length; only offset > 0 matters.
//
// Deviation from EasyDeL: a negative num, or a position or offset that
// would overflow, is an error naming it.
func (v View) UpdateSeq(num int) (View, error) {
	if err := layout.NotEmpty(v.st, "UpdateSeq"); err != nil {
		return View{}, err
	}
	if num < 0 {
		return View{}, fmt.Errorf("%w: UpdateSeq(%d): num must not be negative", ErrOutOfRange, num)
	}
	if v.seqlenOffset > math.MaxInt-num {
		return View{}, fmt.Errorf("%w: seqlen_offset %d + %d overflows", ErrOutOfRange, v.seqlenOffset, num)
	}
	next := v
	next.st.Positions = make([]int32, len(v.st.Positions))
	for b, p := range v.st.Positions {
		if int64(p)+int64(num) > math.MaxInt32 {
			return View{}, fmt.Errorf("%w: positions[%d] = %d + %d overflows int32", ErrOutOfRange, b, p, num)
		}
		next.st.Positions[b] = p + int32(num)
	}
	next.seqlenOffset += num
	return next, nil
}

// Reset returns the view as NewView made it: both states zeroed (shapes and
// dtype kept), positions and seqlen_offset zero. It allocates no state
// storage.
//
// Deviation from EasyDeL: its reset zeroes only the two states and keeps
// seqlen_offset, so a mixer would take the decode path on a fresh state.
func (v View) Reset() (View, error) {
	next, err := v.with(layout.Reset(v.st))
	if err != nil {
		return View{}, err
	}
	next.seqlenOffset = 0
	return next, nil
}

// ResetRows returns the view with the states and positions of the given
// batch rows zeroed (a freed decode slot); the other rows share the
// receiver's storage, and seqlen_offset is kept. Rows must be distinct and
// in range. Not in EasyDeL.
func (v View) ResetRows(rows ...int) (View, error) { return v.with(layout.ResetRows(v.st, rows)) }

// Insert returns the view whose rows [slot, slot+B') hold o's B' rows (conv
// and SSM states and positions), sharing o's storage instead of copying it:
// the transfer of a prefilled sequence into a decode slot. The receiver's
// seqlen_offset is kept. o must have the same conv_dim, heads, head dim,
// state and kernel sizes and dtype, and fit. Not in EasyDeL.
func (v View) Insert(o View, slot int) (View, error) { return v.with(layout.Insert(v.st, o.st, slot)) }
