package reference

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// vec reads a whole tensor into precision F (rounding float64 values when
// F is float32, as the float32 oracles round their inputs). The zero
// Tensor gives nil.
func vec[F float](t tensor.Tensor) []F {
	if t.IsZero() {
		return nil
	}
	out := make([]F, t.Len())
	readRow(t, out, 0)
	return out
}

// rowsOf flattens per-row vectors into one slice.
func flatten[F float](rows [][]F) []F {
	var out []F
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// want checks that t has the given shape, naming it in the error.
func want(name string, t tensor.Tensor, shape ...int) error {
	if t.IsZero() {
		return fmt.Errorf("%w: %s is missing (want shape %v)", ErrInput, name, shape)
	}
	if !t.HasShape(shape...) {
		return fmt.Errorf("%w: %s has shape %v, want %v", ErrInput, name, t.Shape(), shape)
	}
	return nil
}

// convMixer is the token-level math of a mixer built from a depthwise
// causal convolution followed by a selective state-space step (Mamba and
// Mamba2). runFull and stepCached run it over a whole sequence from zero
// states (the full path) or one token at a time through a cache view.
type convMixer[F float] interface {
	// dims returns the conv channels, the conv width K and the length of
	// one row's SSM state.
	dims() (channels, k, state int)
	// stateShape returns the shape of one row's SSM state, as the cache
	// holds it: (I, N) for Mamba, (H, P, N) for Mamba2.
	stateShape() []int
	// conv returns the depthwise conv weight (channels, K) and bias (or nil).
	conv() (w, bias []F)
	// pre returns the conv input column of token t of row b, and the side
	// values post needs for it (gates, projections).
	pre(b, t int) (col, side []F)
	// post finishes a token from its conv output c, advancing the row's SSM
	// state in place, and returns the mixer's output vector.
	post(c, side, state []F) []F
}

// mixed is what a run produces: per row and token (index b*T+t), the
// output vector and the conv output; and per row the final conv window
// (channels, K) and SSM state.
type mixed[F float] struct {
	out, conv       [][]F
	windows, states [][]F
}

// runFull runs tokens [0, t) of rows rows from zero states, with the direct
// causal convolution over the sequence.
func runFull[F float](m convMixer[F], rows, t int) mixed[F] {
	ch, k, sn := m.dims()
	w, bias := m.conv()
	r := mixed[F]{out: make([][]F, rows*t), conv: make([][]F, rows*t), windows: make([][]F, rows), states: make([][]F, rows)}
	for b := range rows {
		cols, sides := make([]F, t*ch), make([][]F, t)
		for i := range t {
			col, side := m.pre(b, i)
			copy(cols[i*ch:], col)
			sides[i] = side
		}
		conv := make([]F, t*ch)
		r.windows[b] = causalConv(conv, cols, w, bias, t, ch, k)
		r.states[b] = make([]F, sn)
		for i := range t {
			c := conv[i*ch : (i+1)*ch]
			r.conv[b*t+i] = c
			r.out[b*t+i] = m.post(c, sides[i], r.states[b])
		}
	}
	return r
}

// convSSMView is what the cached path needs of a Mamba or Mamba2 view.
type convSSMView[V any] interface {
	ConvStates() tensor.Tensor
	SSMStates() tensor.Tensor
	UpdateConvState(newConvState tensor.Tensor, cachePosition int) (V, error)
	UpdateConvStatePositions(newConvState tensor.Tensor, cachePositions []int32) (V, error)
	UpdateSSMState(newSSMState tensor.Tensor) (V, error)
}

// stepCached runs token t of every row through view v: the new input is
// shifted into the cached conv window (position K-1), the conv output is
// read off the window, and the cached SSM state advances one token.
func stepCached[F float, V convSSMView[V]](m convMixer[F], v V, prec Precision, rows, t int) (mixed[F], V, error) {
	ch, k, sn := m.dims()
	w, bias := m.conv()
	cols, sides := make([]F, rows*ch), make([][]F, rows)
	for b := range rows {
		col, side := m.pre(b, t)
		copy(cols[b*ch:], col)
		sides[b] = side
	}
	colT, err := toTensor(prec, cols, rows, ch)
	if err != nil {
		return mixed[F]{}, v, err
	}
	if err := fitsCache(v.ConvStates(), v.SSMStates(), []int{rows, ch, k}, append([]int{rows}, m.stateShape()...)); err != nil {
		return mixed[F]{}, v, err
	}
	if v, err = v.UpdateConvState(colT, k-1); err != nil {
		return mixed[F]{}, v, err
	}
	ssm := v.SSMStates()
	windows, states := vec[F](v.ConvStates()), vec[F](ssm)
	r := mixed[F]{out: make([][]F, rows), conv: make([][]F, rows)}
	for b := range rows {
		c := make([]F, ch)
		convOut(c, windows[b*ch*k:(b+1)*ch*k], w, bias, k)
		r.conv[b] = c
		r.out[b] = m.post(c, sides[b], states[b*sn:(b+1)*sn])
	}
	st, err := toTensor(prec, states, ssm.Shape()...)
	if err != nil {
		return mixed[F]{}, v, err
	}
	v, err = v.UpdateSSMState(st)
	return r, v, err
}

// storeStates writes final conv windows and SSM states into view v, as a
// prefill leaves them: every window column is set (positions 0..K-1).
func storeStates[V convSSMView[V]](v V, out MixerOutput, k int) (V, error) {
	if err := fitsCache(v.ConvStates(), v.SSMStates(), out.ConvState.Shape(), out.SSMState.Shape()); err != nil {
		return v, err
	}
	pos := make([]int32, k)
	for i := range pos {
		pos[i] = int32(i)
	}
	v, err := v.UpdateConvStatePositions(out.ConvState, pos)
	if err != nil {
		return v, err
	}
	return v.UpdateSSMState(out.SSMState)
}

// fitsCache checks that a cache's conv and SSM states have the shapes the
// mixer produces, so no state lands in the wrong rows or channels.
func fitsCache(conv, ssm tensor.Tensor, convShape, ssmShape []int) error {
	if !conv.HasShape(convShape...) || !ssm.HasShape(ssmShape...) {
		return fmt.Errorf("%w: the cache holds conv states %v and ssm states %v, the mixer needs %v and %v",
			ErrInput, conv.Shape(), ssm.Shape(), convShape, ssmShape)
	}
	return nil
}

// binder binds a mixer's weights to one call's inputs in precision F, and
// returns the batch and token counts.
type binder[In any, F float] func(In) (convMixer[F], int, int, error)

// runShape is the sizes of a run's outputs: the output width, the conv
// channels and width, and the SSM state's shape.
type runShape struct {
	outDim, ch, k int
	ssm           []int
}

// forward is the full path of a conv/SSM mixer in precision prec.
func forward[In any, F float](bind binder[In, F], shape func(rows int) runShape, in In, prec Precision) (MixerOutput, error) {
	if err := checkPrecision(prec); err != nil {
		return MixerOutput{}, err
	}
	mx, rows, t, err := bind(in)
	if err != nil {
		return MixerOutput{}, err
	}
	sh := shape(rows)
	return fullOutput(runFull(mx, rows, t), prec, rows, t, sh.outDim, sh.ch, sh.k, sh.ssm)
}

// prefill runs the full path in the cache's precision and leaves the final
// states in v.
func prefill[In any, V convSSMView[V]](fwd func(In, Precision) (MixerOutput, error), in In, v V, k int) (MixerOutput, V, error) {
	prec, err := viewPrecision(v.SSMStates())
	if err != nil {
		return MixerOutput{}, v, err
	}
	out, err := fwd(in, prec)
	if err != nil {
		return out, v, err
	}
	v, err = storeStates(v, out, k)
	return out, v, err
}

// step runs one token per row through view v, in the cache's precision.
func step[In any, F float, V convSSMView[V]](bind binder[In, F], shape func(rows int) runShape, in In, v V) (MixerOutput, V, error) {
	prec, err := viewPrecision(v.SSMStates())
	if err != nil {
		return MixerOutput{}, v, err
	}
	mx, rows, t, err := bind(in)
	if err != nil {
		return MixerOutput{}, v, err
	}
	if t != 1 {
		return MixerOutput{}, v, fmt.Errorf("%w: a step takes 1 token per row, got %d", ErrInput, t)
	}
	r, v, err := stepCached[F](mx, v, prec, rows, 0)
	if err != nil {
		return MixerOutput{}, v, err
	}
	o, err := stepOutput(r, prec, rows, shape(rows).outDim, shape(rows).ch)
	return o, v, err
}

// isFloat64 reports whether a cache's states are float64 (else the cached
// path runs in float32, or fails on another dtype).
func isFloat64(states tensor.Tensor) bool { return states.DType() == tensor.Float64 }

func stepOutput[F float](r mixed[F], prec Precision, rows, outDim, ch int) (MixerOutput, error) {
	var o MixerOutput
	var err error
	if o.Out, err = toTensor(prec, flatten(r.out), rows, 1, outDim); err != nil {
		return o, err
	}
	o.ConvOut, err = toTensor(prec, flatten(r.conv), rows, 1, ch)
	return o, err
}

// fullOutput packs a full run into tensors.
func fullOutput[F float](r mixed[F], prec Precision, rows, t, outDim, ch, k int, ssmShape []int) (MixerOutput, error) {
	var o MixerOutput
	var err error
	if o.Out, err = toTensor(prec, flatten(r.out), rows, t, outDim); err != nil {
		return o, err
	}
	if o.ConvOut, err = toTensor(prec, flatten(r.conv), rows, t, ch); err != nil {
		return o, err
	}
	if o.ConvState, err = toTensor(prec, flatten(r.windows), rows, ch, k); err != nil {
		return o, err
	}
	o.SSMState, err = toTensor(prec, flatten(r.states), ssmShape...)
	return o, err
}

// viewPrecision returns the precision of a cached path: the cache's dtype,
// which must be float64 or float32.
func viewPrecision(states tensor.Tensor) (Precision, error) {
	d := states.DType()
	if err := checkPrecision(d); err != nil {
		return 0, fmt.Errorf("cached path: %w (the cache dtype is the precision)", err)
	}
	return d, nil
}
