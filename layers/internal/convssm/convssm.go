package convssm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kvmesh/kvmesh/layers/internal/rowstore"
	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// State is the conv state, the SSM state and the positions of one view.
// The zero State is absent (the empty view).
type State struct {
	// Conv is the (B, C, K) conv state.
	Conv tensor.Tensor
	// SSM is the (B, ...) SSM state, of Conv's dtype.
	SSM tensor.Tensor
	// Positions holds one int32 per batch row.
	Positions []int32
}

// IsEmpty reports whether s is the zero State, the empty view's.
func (s State) IsEmpty() bool { return s.Conv.IsZero() }

// DType returns the states' dtype (0 for the zero State).
func (s State) DType() tensor.DType { return s.Conv.DType() }

// Ops are the State operations that can fail, reporting failures with one
// cache package's sentinel errors and names. The operations a view method
// calls check its input as that method documents and name the method in
// their errors: UpdateConv (UpdateConvState), UpdateConvPositions
// (UpdateConvStatePositions), UpdateSSM (UpdateSSMState), Reset,
// ResetRows and Insert.
type Ops struct {
	// Shape is wrapped by errors about shapes and conversions.
	Shape error
	// DType is wrapped by errors about dtypes (a cache dtype that is not a
	// float dtype, a snapshot whose states differ in dtype).
	DType error
	// OutOfRange is wrapped by errors about batch rows or slots out of
	// range.
	OutOfRange error
	// Incompatible is wrapped by errors about states that cannot be
	// combined (Insert).
	Incompatible error
	// Empty is wrapped by errors about an operation on an empty view (the
	// zero State).
	Empty error
	// Channels names the conv state's channel axis C in messages
	// ("intermediate_size").
	Channels string
	// SSMAxes name the SSM state's axes after the batch in messages, one
	// name per axis ("intermediate_size", "ssm_state_size").
	SSMAxes []string
}

func (o Ops) store() rowstore.Ops {
	return rowstore.Ops{Shape: o.Shape, OutOfRange: o.OutOfRange, Incompatible: o.Incompatible}
}

// NotEmpty returns an error wrapping o.Empty ("<op> on an empty view")
// when s is the zero State.
func (o Ops) NotEmpty(s State, op string) error {
	if s.IsEmpty() {
		return fmt.Errorf("%w: %s on an empty view", o.Empty, op)
	}
	return nil
}

// New returns a zero-filled State of dtype with a conv state of convShape
// (B, C, K), an SSM state of ssmShape (B, ...) and B zero positions.
// Storage is allocated on first write. A dtype that is not a float dtype
// wraps o.DType; an invalid shape wraps o.Shape and names its state
// ("conv_states: ...").
func (o Ops) New(dtype tensor.DType, convShape, ssmShape []int) (State, error) {
	if !dtype.IsFloat() {
		return State{}, fmt.Errorf("%w: cache dtype %s (want float32, bfloat16, float16 or float64)", o.DType, dtype)
	}
	conv, err := rowstore.New(dtype, convShape...)
	if err != nil {
		return State{}, fmt.Errorf("%w: conv_states: %v", o.Shape, err)
	}
	ssm, err := rowstore.New(dtype, ssmShape...)
	if err != nil {
		return State{}, fmt.Errorf("%w: ssm_states: %v", o.Shape, err)
	}
	return State{Conv: conv, SSM: ssm, Positions: make([]int32, convShape[0])}, nil
}

// Clip returns p clipped to [0, k-1] (jnp.clip): the conv column that
// EasyDeL's update_conv_state writes for cache position p.
func Clip(p, k int) int { return min(max(p, 0), k-1) }

// ClipAll returns the positions clipped by Clip.
func ClipAll(positions []int32, k int) []int {
	out := make([]int, len(positions))
	for j, p := range positions {
		out[j] = Clip(int(p), k)
	}
	return out
}

// UpdateConv is EasyDeL's update_conv_state with a scalar cache_position
// (View.UpdateConvState): col must be (B, C) and is written into column
// Clip(cachePosition, K) after the roll (see RollConv). An empty s wraps
// o.Empty, a col of another shape o.Shape.
func (o Ops) UpdateConv(s State, col tensor.Tensor, cachePosition int) (State, error) {
	if err := o.NotEmpty(s, "UpdateConvState"); err != nil {
		return State{}, err
	}
	b, c, k := s.Conv.Dim(0), s.Conv.Dim(1), s.Conv.Dim(2)
	if col.IsZero() || !col.HasShape(b, c) {
		return State{}, fmt.Errorf("%w: new_conv_state has shape %s, want (batch %d, %s %d)", o.Shape, shapeOf(col), b, o.Channels, c)
	}
	return o.RollConv(s, col, []int{Clip(cachePosition, k)})
}

// UpdateConvPositions is UpdateConv with an array cache_position
// (View.UpdateConvStatePositions): cols must be (B, C, len(cachePositions))
// and column Clip(cachePositions[j], K) takes cols[:, :, j] after the roll,
// a later duplicate winning. An empty s wraps o.Empty, cols of another
// shape o.Shape.
func (o Ops) UpdateConvPositions(s State, cols tensor.Tensor, cachePositions []int32) (State, error) {
	if err := o.NotEmpty(s, "UpdateConvStatePositions"); err != nil {
		return State{}, err
	}
	b, c, k := s.Conv.Dim(0), s.Conv.Dim(1), s.Conv.Dim(2)
	if cols.IsZero() || !cols.HasShape(b, c, len(cachePositions)) {
		return State{}, fmt.Errorf("%w: new_conv_state has shape %s, want (batch %d, %s %d, positions %d)",
			o.Shape, shapeOf(cols), b, o.Channels, c, len(cachePositions))
	}
	return o.RollConv(s, cols, ClipAll(cachePositions, k))
}

// UpdateSSM returns s with the SSM state replaced by ssm, converted to the
// state dtype (View.UpdateSSMState): ssm must have the SSM state's shape.
// An empty s wraps o.Empty, an ssm of another shape o.Shape (the message
// names the axes by o.SSMAxes).
func (o Ops) UpdateSSM(s State, ssm tensor.Tensor) (State, error) {
	if err := o.NotEmpty(s, "UpdateSSMState"); err != nil {
		return State{}, err
	}
	want := s.SSM.Shape()
	if ssm.IsZero() || !ssm.HasShape(want...) {
		axes := make([]string, len(want))
		for i, d := range want {
			name := "batch"
			if i > 0 {
				name = o.SSMAxes[i-1]
			}
			axes[i] = fmt.Sprintf("%s %d", name, d)
		}
		return State{}, fmt.Errorf("%w: new_ssm_state has shape %s, want (%s)", o.Shape, shapeOf(ssm), strings.Join(axes, ", "))
	}
	return o.SetSSM(s, ssm)
}

// shapeOf describes a tensor's shape for error messages.
func shapeOf(t tensor.Tensor) string {
	if t.IsZero() {
		return "<absent>"
	}
	return fmt.Sprint(t.Shape())
}

// RollConv applies EasyDeL's update_conv_state to s's conv state: it rolls
// every row left by one along K (column k takes old column (k+1) mod K),
// then writes cols[b, c, j] (a (B, C, L) tensor, converted to the state
// dtype) into column cps[j], for j in order (a later duplicate position
// wins). cps must already be clipped to [0, K-1] (see Clip). Bytes are
// moved as they are, so the update is exact in every dtype. Failures wrap
// o.Shape.
func (o Ops) RollConv(s State, cols tensor.Tensor, cps []int) (State, error) {
	st := s.Conv
	dtype, es := st.DType(), st.DType().Size()
	b, c, k, l := st.Dim(0), st.Dim(1), st.Dim(2), len(cps)
	buf := make([]byte, st.NumBytes())
	if err := st.ReadBytes(buf, dtype, 0); err != nil {
		return State{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	col := make([]byte, b*c*l*es)
	if err := cols.ReadBytes(col, dtype, 0); err != nil {
		return State{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	// Roll in place: shift the flat buffer left by one element, then put
	// each window's old first element into its last column (unless a write
	// to column K-1 replaces it anyway).
	w := k * es
	var first []byte
	if !slices.Contains(cps, k-1) {
		first = make([]byte, b*c*es)
		for i := 0; i < b*c; i++ {
			copyElem(first[i*es:], buf[i*w:], es)
		}
	}
	copy(buf, buf[es:])
	for i := 0; i < b*c; i++ {
		d := buf[i*w : (i+1)*w]
		if first != nil {
			copyElem(d[w-es:], first[i*es:], es)
		}
		for j, p := range cps {
			copyElem(d[p*es:], col[(i*l+j)*es:], es)
		}
	}
	src, err := tensor.FromBytes(dtype, buf, b, c, k)
	if err != nil {
		return State{}, fmt.Errorf("%w: %v", o.Shape, err)
	}
	if s.Conv, err = o.store().Fill(dtype, src, b, c, k); err != nil {
		return State{}, err
	}
	return s, nil
}

// copyElem copies one element of es bytes (cheaper than copy for 2 to 8
// bytes).
func copyElem(dst, src []byte, es int) {
	switch es {
	case 2:
		dst[0], dst[1] = src[0], src[1]
	case 4:
		_, _ = dst[3], src[3]
		dst[0], dst[1], dst[2], dst[3] = src[0], src[1], src[2], src[3]
	default:
		copy(dst[:es], src[:es])
	}
}

// SetSSM returns s with the SSM state replaced by ssm's elements, converted
// to the state dtype; ssm must have as many elements (the caller checks its
// shape). Failures wrap o.Shape.
func (o Ops) SetSSM(s State, ssm tensor.Tensor) (State, error) {
	st, err := o.store().Fill(s.DType(), ssm, s.SSM.Shape()...)
	if err != nil {
		return State{}, err
	}
	s.SSM = st
	return s, nil
}

// ResetRows returns s with the states and positions of the given batch
// rows zeroed; the other rows share s's storage. Rows must be distinct and
// in range (errors wrap o.OutOfRange and name the row); an empty s wraps
// o.Empty.
func (o Ops) ResetRows(s State, rows []int) (State, error) {
	if err := o.NotEmpty(s, "ResetRows"); err != nil {
		return State{}, err
	}
	return o.resetRows(s, rows)
}

func (o Ops) resetRows(s State, rows []int) (State, error) {
	store := o.store()
	if err := store.CheckRows(rows, len(s.Positions)); err != nil {
		return State{}, err
	}
	next := State{Positions: slices.Clone(s.Positions)}
	var err error
	if next.Conv, err = store.ZeroRows(s.Conv, rows); err != nil {
		return State{}, err
	}
	if next.SSM, err = store.ZeroRows(s.SSM, rows); err != nil {
		return State{}, err
	}
	for _, r := range rows {
		next.Positions[r] = 0
	}
	return next, nil
}

// Reset returns s with every row zeroed: ResetRows of all rows. It
// allocates no state storage. An empty s wraps o.Empty.
func (o Ops) Reset(s State) (State, error) {
	if err := o.NotEmpty(s, "Reset"); err != nil {
		return State{}, err
	}
	rows := make([]int, len(s.Positions))
	for i := range rows {
		rows[i] = i
	}
	return o.resetRows(s, rows)
}

// Insert returns s whose rows [slot, slot+B') hold from's B' rows (both
// states and the positions), sharing from's storage instead of copying it.
// Both must be non-empty (else the error wraps o.Empty) and have the same
// per-row state sizes and dtype (else o.Incompatible), and the slot range
// must be within s's rows (else o.OutOfRange).
func (o Ops) Insert(s, from State, slot int) (State, error) {
	if err := o.NotEmpty(s, "Insert"); err != nil {
		return State{}, err
	}
	if from.IsEmpty() {
		return State{}, fmt.Errorf("%w: Insert of an empty view", o.Empty)
	}
	if !slices.Equal(s.Conv.Shape()[1:], from.Conv.Shape()[1:]) || !slices.Equal(s.SSM.Shape()[1:], from.SSM.Shape()[1:]) || s.DType() != from.DType() {
		return State{}, fmt.Errorf("%w: inserting conv_states %s / ssm_states %s into conv_states %s / ssm_states %s (want equal sizes and dtype)",
			o.Incompatible, from.Conv, from.SSM, s.Conv, s.SSM)
	}
	batch, rows := len(s.Positions), len(from.Positions)
	if slot < 0 || slot+rows > batch {
		return State{}, fmt.Errorf("%w: slot %d for %d rows (batch has rows 0..%d)", o.OutOfRange, slot, rows, batch-1)
	}
	store := o.store()
	next := State{Positions: slices.Clone(s.Positions)}
	var err error
	if next.Conv, err = store.ShareRows(s.Conv, from.Conv, slot); err != nil {
		return State{}, err
	}
	if next.SSM, err = store.ShareRows(s.SSM, from.SSM, slot); err != nil {
		return State{}, err
	}
	copy(next.Positions[slot:], from.Positions)
	return next, nil
}

// Put stores s in a view's snapshot entries "conv_states", "ssm_states"
// and "positions".
func Put(e viewsnap.Entry, s State) {
	e.SetTensor("conv_states", s.Conv)
	e.SetTensor("ssm_states", s.SSM)
	e.SetInt32s("positions", s.Positions)
}

// Get decodes the State that Put stored, checking it against the shapes
// the view's metadata prescribes: the conv and SSM states must have
// convShape and ssmShape (else o.Shape) and one dtype (else o.DType), and
// positions one value per batch row (convShape[0]). The decoded states
// are in the store layout, sharing the snapshot's storage when they
// already were.
func (o Ops) Get(e viewsnap.Entry, convShape, ssmShape []int) (State, error) {
	conv, _ := e.Tensor("conv_states")
	ssm, _ := e.Tensor("ssm_states")
	if !conv.HasShape(convShape...) || !ssm.HasShape(ssmShape...) {
		return State{}, fmt.Errorf("%w: conv_states %s and ssm_states %s, want shapes %v and %v",
			o.Shape, conv, ssm, convShape, ssmShape)
	}
	if conv.DType() != ssm.DType() {
		return State{}, fmt.Errorf("%w: conv_states is %s, ssm_states is %s (want one dtype)", o.DType, conv.DType(), ssm.DType())
	}
	s := State{Positions: e.Int32s("positions")}
	if len(s.Positions) != convShape[0] {
		return State{}, fmt.Errorf("%w: positions has %d values, want one per batch row (%d)", o.Shape, len(s.Positions), convShape[0])
	}
	store := o.store()
	var err error
	if s.Conv, err = store.Restore(conv); err != nil {
		return State{}, err
	}
	if s.SSM, err = store.Restore(ssm); err != nil {
		return State{}, err
	}
	return s, nil
}
