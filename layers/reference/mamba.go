package reference

import (
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// MambaWeights are the parameters of a Mamba (v1) mixer (state-spaces/mamba
// semantics; spec section 11.5). The inner form takes x, z, dt, B and C as
// inputs and uses only the first five fields; the module form computes them
// from hidden states and needs the projections too.
type MambaWeights struct {
	ConvWeight tensor.Tensor // (I, K): depthwise causal conv over x
	ConvBias   tensor.Tensor // (I), or zero for none
	DtBias     tensor.Tensor // (I): added to dt before softplus (the module's dt_proj bias)
	ALog       tensor.Tensor // (I, N): A = -exp(A_log)
	D          tensor.Tensor // (I): skip connection on the conv output

	InProj  tensor.Tensor // module: (2I, d_model), x then z
	XProj   tensor.Tensor // module: (R+2N, I), dt_raw then B then C
	DtProj  tensor.Tensor // module: (I, R)
	OutProj tensor.Tensor // module: (d_model, I)
}

// MambaInput is one call's input: Hidden (B, T, d_model) for the module
// form, or X, Z, Dt (B, T, I) and B, C (B, T, N) for the inner form.
type MambaInput struct {
	Hidden         tensor.Tensor
	X, Z, Dt, B, C tensor.Tensor
}

// MixerOutput is what a mixer call returns: Out (B, T, ·) is the module
// output (d_model) or the inner output (I); ConvOut (B, T, channels) is the
// activated conv output. Forward also returns the final states it would
// leave in a cache.
type MixerOutput struct {
	Out, ConvOut        tensor.Tensor
	ConvState, SSMState tensor.Tensor
}

// Mamba is a Mamba (v1) mixer with fixed weights.
type Mamba struct {
	w                  MambaWeights
	i, n, k, r, dModel int
	module             bool
}

// NewMamba checks the weights' shapes against each other. The module form
// is chosen when InProj is present.
func NewMamba(w MambaWeights) (*Mamba, error) {
	if w.ConvWeight.Rank() != 2 || w.ALog.Rank() != 2 {
		return nil, fmt.Errorf("%w: conv weight %v and A_log %v, want (I, K) and (I, N)", ErrInput, w.ConvWeight.Shape(), w.ALog.Shape())
	}
	m := &Mamba{w: w, i: w.ConvWeight.Dim(0), k: w.ConvWeight.Dim(1), n: w.ALog.Dim(1), module: !w.InProj.IsZero()}
	checks := []error{want("A_log", w.ALog, m.i, m.n), want("dt_bias", w.DtBias, m.i), want("D", w.D, m.i)}
	if !w.ConvBias.IsZero() {
		checks = append(checks, want("conv bias", w.ConvBias, m.i))
	}
	if m.module {
		if w.InProj.Rank() != 2 || w.DtProj.Rank() != 2 {
			return nil, fmt.Errorf("%w: in_proj %v and dt_proj %v, want (2I, d_model) and (I, R)", ErrInput, w.InProj.Shape(), w.DtProj.Shape())
		}
		m.dModel, m.r = w.InProj.Dim(1), w.DtProj.Dim(1)
		checks = append(checks, want("in_proj", w.InProj, 2*m.i, m.dModel), want("x_proj", w.XProj, m.r+2*m.n, m.i),
			want("dt_proj", w.DtProj, m.i, m.r), want("out_proj", w.OutProj, m.dModel, m.i))
	}
	for _, err := range checks {
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// mamba1 is a Mamba mixer bound to one call's inputs, in precision F.
type mamba1[F float] struct {
	m                              *Mamba
	t                              int
	convW, convB, dtBias, a, d     []F
	inProj, xProj, dtProj, outProj []F
	hidden, x, z, dt, bm, cm       []F
}

// bind checks in against the weights and returns the mixer over it, and
// its batch and token counts.
func bindMamba[F float](m *Mamba, in MambaInput) (*mamba1[F], int, int, error) {
	var rows, t int
	if m.module {
		if in.Hidden.Rank() != 3 || in.Hidden.Dim(2) != m.dModel {
			return nil, 0, 0, fmt.Errorf("%w: hidden states have shape %v, want (batch, tokens, %d)", ErrInput, in.Hidden.Shape(), m.dModel)
		}
		rows, t = in.Hidden.Dim(0), in.Hidden.Dim(1)
	} else {
		if in.X.Rank() != 3 {
			return nil, 0, 0, fmt.Errorf("%w: x has shape %v, want (batch, tokens, %d)", ErrInput, in.X.Shape(), m.i)
		}
		rows, t = in.X.Dim(0), in.X.Dim(1)
		for _, c := range []error{want("x", in.X, rows, t, m.i), want("z", in.Z, rows, t, m.i), want("dt", in.Dt, rows, t, m.i),
			want("B", in.B, rows, t, m.n), want("C", in.C, rows, t, m.n)} {
			if c != nil {
				return nil, 0, 0, c
			}
		}
	}
	mx := &mamba1[F]{m: m, t: t, convW: vec[F](m.w.ConvWeight), convB: vec[F](m.w.ConvBias), dtBias: vec[F](m.w.DtBias), d: vec[F](m.w.D),
		inProj: vec[F](m.w.InProj), xProj: vec[F](m.w.XProj), dtProj: vec[F](m.w.DtProj), outProj: vec[F](m.w.OutProj),
		hidden: vec[F](in.Hidden), x: vec[F](in.X), z: vec[F](in.Z), dt: vec[F](in.Dt), bm: vec[F](in.B), cm: vec[F](in.C)}
	mx.a = negExp(vec[F](m.w.ALog))
	return mx, rows, t, nil
}

// negExp returns -exp(x) elementwise: A from A_log.
func negExp[F float](x []F) []F {
	out := make([]F, len(x))
	for j, v := range x {
		out[j] = -F(math.Exp(float64(v)))
	}
	return out
}

func (mx *mamba1[F]) dims() (int, int, int) { return mx.m.i, mx.m.k, mx.m.i * mx.m.n }
func (mx *mamba1[F]) conv() ([]F, []F)      { return mx.convW, mx.convB }
func (mx *mamba1[F]) stateShape() []int     { return []int{mx.m.i, mx.m.n} }

func (mx *mamba1[F]) pre(b, t int) (col, side []F) {
	i, n, at := mx.m.i, mx.m.n, b*mx.t+t
	if mx.m.module {
		xz := make([]F, 2*i)
		matVec(xz, mx.inProj, mx.hidden[at*mx.m.dModel:(at+1)*mx.m.dModel])
		return xz[:i], xz[i:]
	}
	side = make([]F, 0, 2*i+2*n)
	side = append(side, mx.z[at*i:(at+1)*i]...)
	side = append(side, mx.dt[at*i:(at+1)*i]...)
	side = append(side, mx.bm[at*n:(at+1)*n]...)
	side = append(side, mx.cm[at*n:(at+1)*n]...)
	return mx.x[at*i : (at+1)*i], side
}

func (mx *mamba1[F]) post(c, side, state []F) []F {
	i, n, r := mx.m.i, mx.m.n, mx.m.r
	var z, dt, b, cm []F
	if mx.m.module {
		dbl := make([]F, r+2*n)
		matVec(dbl, mx.xProj, c)
		dt = make([]F, i)
		matVec(dt, mx.dtProj, dbl[:r])
		z, b, cm = side, dbl[r:r+n], dbl[r+n:]
	} else {
		z, dt, b, cm = side[:i], side[i:2*i], side[2*i:2*i+n], side[2*i+n:]
	}
	y := make([]F, i)
	mambaSSMStep(state, y, c, dt, mx.dtBias, mx.a, b, cm, mx.d, z)
	if !mx.m.module {
		return y
	}
	out := make([]F, mx.m.dModel)
	matVec(out, mx.outProj, y)
	return out
}

func (m *Mamba) outDim() int {
	if m.module {
		return m.dModel
	}
	return m.i
}

// shape gives the shared drivers the sizes of a run over rows rows.
func (m *Mamba) shape(rows int) runShape {
	return runShape{outDim: m.outDim(), ch: m.i, k: m.k, ssm: []int{rows, m.i, m.n}}
}

// Forward runs the whole sequence from zero states (the full path: a direct
// causal convolution and a scan), in precision prec.
func (m *Mamba) Forward(in MambaInput, prec Precision) (MixerOutput, error) {
	if prec == tensor.Float64 {
		return forward(mambaBinder[float64](m), m.shape, in, prec)
	}
	return forward(mambaBinder[float32](m), m.shape, in, prec)
}

// Prefill runs the whole input through the full path from zero states and
// leaves the final conv window and SSM state in v, as a prefill does.
func (m *Mamba) Prefill(in MambaInput, v mamba.View) (MixerOutput, mamba.View, error) {
	return prefill(m.Forward, in, v, m.k)
}

// Step runs one token per row (inputs with T = 1) through the cache view v:
// the decode step. It returns the outputs (B, 1, ·) and the next view.
func (m *Mamba) Step(in MambaInput, v mamba.View) (MixerOutput, mamba.View, error) {
	if isFloat64(v.SSMStates()) {
		return step(mambaBinder[float64](m), m.shape, in, v)
	}
	return step(mambaBinder[float32](m), m.shape, in, v)
}

func mambaBinder[F float](m *Mamba) binder[MambaInput, F] {
	return func(in MambaInput) (convMixer[F], int, int, error) {
		mx, rows, t, err := bindMamba[F](m, in)
		return mx, rows, t, err
	}
}
