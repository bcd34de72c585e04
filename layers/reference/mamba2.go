package reference

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Mamba2Weights are the parameters of a Mamba2 mixer (state-spaces/mamba
// Mamba2 semantics; spec section 11.6 and the oracles' README). The conv
// runs over xBC = [x (I) | B (G·N) | C (G·N)]; head h uses group h/(H/G).
// The inner form takes xBC, z and dt as inputs; the module form computes
// them from hidden states and adds the gated RMSNorm and out_proj.
type Mamba2Weights struct {
	Heads, HeadDim, Groups, StateSize int

	ConvWeight tensor.Tensor // (I+2GN, K)
	ConvBias   tensor.Tensor // (I+2GN), or zero for none
	DtBias     tensor.Tensor // (H)
	ALog       tensor.Tensor // (H): A = -exp(A_log)
	D          tensor.Tensor // (H)

	InProj     tensor.Tensor // module: (2I+2GN+H, d_model), z | xBC | dt
	NormWeight tensor.Tensor // module: (I), gated RMSNorm weight
	NormEps    float64       // module: RMSNorm epsilon (0 means 1e-5)
	OutProj    tensor.Tensor // module: (d_model, I)
}

// Mamba2Input is one call's input: Hidden (B, T, d_model) for the module
// form, or XBC (B, T, I+2GN), Z (B, T, I) and Dt (B, T, H) for the inner form.
type Mamba2Input struct {
	Hidden     tensor.Tensor
	XBC, Z, Dt tensor.Tensor
}

// Mamba2 is a Mamba2 mixer with fixed weights.
type Mamba2 struct {
	w                            Mamba2Weights
	i, conv, k, dModel, stateLen int
	module                       bool
}

// NewMamba2 checks the weights' shapes against each other and the
// dimensions. The module form is chosen when InProj is present.
func NewMamba2(w Mamba2Weights) (*Mamba2, error) {
	h, p, g, n := w.Heads, w.HeadDim, w.Groups, w.StateSize
	if h <= 0 || p <= 0 || g <= 0 || n <= 0 || h%g != 0 {
		return nil, fmt.Errorf("%w: heads %d, head_dim %d, groups %d, d_state %d (all positive, groups dividing heads)", ErrInput, h, p, g, n)
	}
	if w.ConvWeight.Rank() != 2 {
		return nil, fmt.Errorf("%w: conv weight %v, want (I+2GN, K)", ErrInput, w.ConvWeight.Shape())
	}
	m := &Mamba2{w: w, i: h * p, conv: h*p + 2*g*n, k: w.ConvWeight.Dim(1), stateLen: h * p * n, module: !w.InProj.IsZero()}
	checks := []error{want("conv weight", w.ConvWeight, m.conv, m.k), want("dt_bias", w.DtBias, h), want("A_log", w.ALog, h), want("D", w.D, h)}
	if !w.ConvBias.IsZero() {
		checks = append(checks, want("conv bias", w.ConvBias, m.conv))
	}
	if m.module {
		if w.InProj.Rank() != 2 {
			return nil, fmt.Errorf("%w: in_proj %v, want (2I+2GN+H, d_model)", ErrInput, w.InProj.Shape())
		}
		m.dModel = w.InProj.Dim(1)
		checks = append(checks, want("in_proj", w.InProj, m.i+m.conv+h, m.dModel), want("norm weight", w.NormWeight, m.i),
			want("out_proj", w.OutProj, m.dModel, m.i))
		if m.i%g != 0 {
			return nil, fmt.Errorf("%w: d_inner %d is not a multiple of %d norm groups", ErrInput, m.i, g)
		}
	}
	for _, err := range checks {
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

type mamba2mx[F float] struct {
	m                          *Mamba2
	t                          int
	convW, convB, dtBias, a, d []F
	inProj, normW, outProj     []F
	eps                        F
	hidden, xbc, z, dt         []F
}

func bindMamba2[F float](m *Mamba2, in Mamba2Input) (*mamba2mx[F], int, int, error) {
	var rows, t int
	h := m.w.Heads
	if m.module {
		if in.Hidden.Rank() != 3 || in.Hidden.Dim(2) != m.dModel {
			return nil, 0, 0, fmt.Errorf("%w: hidden states have shape %v, want (batch, tokens, %d)", ErrInput, in.Hidden.Shape(), m.dModel)
		}
		rows, t = in.Hidden.Dim(0), in.Hidden.Dim(1)
	} else {
		if in.XBC.Rank() != 3 {
			return nil, 0, 0, fmt.Errorf("%w: xBC has shape %v, want (batch, tokens, %d)", ErrInput, in.XBC.Shape(), m.conv)
		}
		rows, t = in.XBC.Dim(0), in.XBC.Dim(1)
		for _, c := range []error{want("xBC", in.XBC, rows, t, m.conv), want("z", in.Z, rows, t, m.i), want("dt", in.Dt, rows, t, h)} {
			if c != nil {
				return nil, 0, 0, c
			}
		}
	}
	eps := m.w.NormEps
	if eps == 0 {
		eps = 1e-5
	}
	mx := &mamba2mx[F]{m: m, t: t, convW: vec[F](m.w.ConvWeight), convB: vec[F](m.w.ConvBias), dtBias: vec[F](m.w.DtBias),
		a: negExp(vec[F](m.w.ALog)), d: vec[F](m.w.D), inProj: vec[F](m.w.InProj), normW: vec[F](m.w.NormWeight),
		outProj: vec[F](m.w.OutProj), eps: F(eps), hidden: vec[F](in.Hidden), xbc: vec[F](in.XBC), z: vec[F](in.Z), dt: vec[F](in.Dt)}
	return mx, rows, t, nil
}

func (mx *mamba2mx[F]) dims() (int, int, int) { return mx.m.conv, mx.m.k, mx.m.stateLen }
func (mx *mamba2mx[F]) conv() ([]F, []F)      { return mx.convW, mx.convB }
func (mx *mamba2mx[F]) stateShape() []int {
	return []int{mx.m.w.Heads, mx.m.w.HeadDim, mx.m.w.StateSize}
}

// pre returns the xBC column and the side values z (I) then dt (H).
func (mx *mamba2mx[F]) pre(b, t int) (col, side []F) {
	i, c, h, at := mx.m.i, mx.m.conv, mx.m.w.Heads, b*mx.t+t
	if mx.m.module {
		zxbcdt := make([]F, i+c+h)
		matVec(zxbcdt, mx.inProj, mx.hidden[at*mx.m.dModel:(at+1)*mx.m.dModel])
		return zxbcdt[i : i+c], append(zxbcdt[:i:i], zxbcdt[i+c:]...)
	}
	side = append(append([]F(nil), mx.z[at*i:(at+1)*i]...), mx.dt[at*h:(at+1)*h]...)
	return mx.xbc[at*c : (at+1)*c], side
}

func (mx *mamba2mx[F]) post(c, side, state []F) []F {
	w := mx.m.w
	i, gn := mx.m.i, w.Groups*w.StateSize
	z := side[:i]
	y := make([]F, i)
	mamba2SSMStep(state, y, c[:i], c[i:i+gn], c[i+gn:i+2*gn], side[i:], mx.dtBias, mx.a, mx.d, w.Heads, w.HeadDim, w.StateSize, w.Groups)
	for j := range y {
		y[j] *= silu(z[j])
	}
	if !mx.m.module {
		return y
	}
	// Gated RMSNorm, normalised per group of I/G values, then out_proj.
	rmsNorm(y, y, mx.normW, w.Groups, mx.eps)
	out := make([]F, mx.m.dModel)
	matVec(out, mx.outProj, y)
	return out
}

func (m *Mamba2) outDim() int {
	if m.module {
		return m.dModel
	}
	return m.i
}

// shape gives the shared drivers the sizes of a run over rows rows.
func (m *Mamba2) shape(rows int) runShape {
	return runShape{outDim: m.outDim(), ch: m.conv, k: m.k, ssm: []int{rows, m.w.Heads, m.w.HeadDim, m.w.StateSize}}
}

// Forward runs the whole sequence from zero states (the full path), in
// precision prec.
func (m *Mamba2) Forward(in Mamba2Input, prec Precision) (MixerOutput, error) {
	if prec == tensor.Float64 {
		return forward(mamba2Binder[float64](m), m.shape, in, prec)
	}
	return forward(mamba2Binder[float32](m), m.shape, in, prec)
}

// Prefill runs the whole input through the full path from zero states and
// leaves the final conv window and SSM state in v.
func (m *Mamba2) Prefill(in Mamba2Input, v mamba2.View) (MixerOutput, mamba2.View, error) {
	return prefill(m.Forward, in, v, m.k)
}

// Step runs one token per row (inputs with T = 1) through the cache view v.
func (m *Mamba2) Step(in Mamba2Input, v mamba2.View) (MixerOutput, mamba2.View, error) {
	if isFloat64(v.SSMStates()) {
		return step(mamba2Binder[float64](m), m.shape, in, v)
	}
	return step(mamba2Binder[float32](m), m.shape, in, v)
}

func mamba2Binder[F float](m *Mamba2) binder[Mamba2Input, F] {
	return func(in Mamba2Input) (convMixer[F], int, int, error) {
		mx, rows, t, err := bindMamba2[F](m, in)
		return mx, rows, t, err
	}
}
