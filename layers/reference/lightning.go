package reference

import (
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// LightningWeights are the parameters of a MiniMax lightning (linear)
// attention layer (Hugging Face's MiniMaxLightningAttention; spec section
// 11.7 and the oracles' README).
type LightningWeights struct {
	Heads, HeadDim      int
	LayerIdx, NumLayers int           // set the per-head decay (lightning.SlopeRates)
	BlockSize           int           // the full path's block length (0 means 256)
	NormEps             float64       // RMSNorm epsilon (0 means 1e-6)
	QKVProj             tensor.Tensor // (H·3·Dh, hidden): per head q | k | v
	OutputGate          tensor.Tensor // (H·Dh, hidden)
	OutProj             tensor.Tensor // (hidden, H·Dh)
	NormWeight          tensor.Tensor // (H·Dh)
}

// LightningOutput is what a lightning call returns: Out (B, T, hidden),
// Core (B, T, H·Dh) (the attention output before norm and gate) and Q, K, V
// (B, H, T, Dh). Forward also returns the final state KV (B, H, Dh, Dh).
type LightningOutput struct {
	Out, Core, Q, K, V, KV tensor.Tensor
}

// Lightning is a lightning attention layer with fixed weights.
type Lightning struct {
	w      LightningWeights
	hidden int
	slopes []float64
}

// NewLightning checks the weights' shapes and computes the decay rates.
func NewLightning(w LightningWeights) (*Lightning, error) {
	if w.Heads <= 0 || w.HeadDim <= 0 {
		return nil, fmt.Errorf("%w: lightning heads %d and head_dim %d must be positive", ErrInput, w.Heads, w.HeadDim)
	}
	if w.QKVProj.Rank() != 2 {
		return nil, fmt.Errorf("%w: qkv_proj %v, want (H*3*Dh, hidden)", ErrInput, w.QKVProj.Shape())
	}
	hd := w.Heads * w.HeadDim
	l := &Lightning{w: w, hidden: w.QKVProj.Dim(1)}
	for _, err := range []error{want("qkv_proj", w.QKVProj, 3*hd, l.hidden), want("output_gate", w.OutputGate, hd, l.hidden),
		want("out_proj", w.OutProj, l.hidden, hd), want("norm weight", w.NormWeight, hd)} {
		if err != nil {
			return nil, err
		}
	}
	if w.BlockSize < 0 {
		return nil, fmt.Errorf("%w: lightning block size %d must be positive", ErrInput, w.BlockSize)
	}
	s, err := lightning.SlopeRates(w.Heads, w.LayerIdx, w.NumLayers)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	l.slopes = s
	return l, nil
}

// SlopeRates returns the per-head decay rates s_h the layer uses.
func (l *Lightning) SlopeRates() []float64 { return append([]float64(nil), l.slopes...) }

// lightningRun holds one call's projections in precision F.
type lightningRun[F float] struct {
	l          *Lightning
	rows, t    int
	hidden     []F
	q, k, v    []F // (B, H, T, Dh)
	gate       []F // (B, T, H·Dh): sigmoid(output_gate · h)
	core       []F // (B, T, H·Dh)
	normW, out []F
	outProj    []F
}

// project computes q, k, v (silu of qkv_proj) and the output gate for every
// token of hidden (B, T, hidden).
func project[F float](l *Lightning, hiddenT tensor.Tensor) (*lightningRun[F], error) {
	if hiddenT.Rank() != 3 || hiddenT.Dim(2) != l.hidden {
		return nil, fmt.Errorf("%w: hidden states have shape %v, want (batch, tokens, %d)", ErrInput, hiddenT.Shape(), l.hidden)
	}
	h, dh := l.w.Heads, l.w.HeadDim
	hd := h * dh
	r := &lightningRun[F]{l: l, rows: hiddenT.Dim(0), t: hiddenT.Dim(1), hidden: vec[F](hiddenT), normW: vec[F](l.w.NormWeight), outProj: vec[F](l.w.OutProj)}
	n := r.rows * r.t
	r.q, r.k, r.v = make([]F, n*hd), make([]F, n*hd), make([]F, n*hd)
	r.gate, r.core = make([]F, n*hd), make([]F, n*hd)
	qkvW, gateW := vec[F](l.w.QKVProj), vec[F](l.w.OutputGate)
	qkv := make([]F, 3*hd)
	for b := range r.rows {
		for t := range r.t {
			x := r.hidden[(b*r.t+t)*l.hidden : (b*r.t+t+1)*l.hidden]
			matVec(qkv, qkvW, x)
			for hh := range h {
				for j := range dh {
					at := ((b*h+hh)*r.t+t)*dh + j
					r.q[at] = silu(qkv[hh*3*dh+j])
					r.k[at] = silu(qkv[hh*3*dh+dh+j])
					r.v[at] = silu(qkv[hh*3*dh+2*dh+j])
				}
			}
			g := r.gate[(b*r.t+t)*hd : (b*r.t+t+1)*hd]
			matVec(g, gateW, x)
			for j := range g {
				g[j] = sigmoid(g[j])
			}
		}
	}
	return r, nil
}

// finish applies RMSNorm, the gate and out_proj to every token's core.
func (r *lightningRun[F]) finish() []F {
	hd := r.l.w.Heads * r.l.w.HeadDim
	eps := r.l.w.NormEps
	if eps == 0 {
		eps = 1e-6
	}
	out := make([]F, r.rows*r.t*r.l.hidden)
	y := make([]F, hd)
	for bt := range r.rows * r.t {
		rmsNorm(y, r.core[bt*hd:(bt+1)*hd], r.normW, 1, F(eps))
		g := r.gate[bt*hd : (bt+1)*hd]
		for j := range y {
			y[j] = g[j] * y[j]
		}
		matVec(out[bt*r.l.hidden:(bt+1)*r.l.hidden], r.outProj, y)
	}
	return out
}

// Forward runs the whole sequence from a zero state with the block-wise
// algorithm (blocks of BlockSize tokens: exact decayed attention inside a
// block, the carried state across blocks), in precision prec.
func (l *Lightning) Forward(hidden tensor.Tensor, prec Precision) (LightningOutput, error) {
	if err := checkPrecision(prec); err != nil {
		return LightningOutput{}, err
	}
	if prec == tensor.Float64 {
		return lightningForward[float64](l, hidden, prec)
	}
	return lightningForward[float32](l, hidden, prec)
}

func lightningForward[F float](l *Lightning, hidden tensor.Tensor, prec Precision) (LightningOutput, error) {
	r, err := project[F](l, hidden)
	if err != nil {
		return LightningOutput{}, err
	}
	h, dh := l.w.Heads, l.w.HeadDim
	bs := l.w.BlockSize
	if bs == 0 {
		bs = 256
	}
	kv := make([]F, r.rows*h*dh*dh)
	for b := range r.rows {
		for hh := range h {
			s := l.slopes[hh]
			state := kv[(b*h+hh)*dh*dh : (b*h+hh+1)*dh*dh]
			base := (b*h + hh) * r.t * dh
			q, k, v := r.q[base:base+r.t*dh], r.k[base:base+r.t*dh], r.v[base:base+r.t*dh]
			for s0 := 0; s0 < r.t; s0 += bs {
				n := min(bs, r.t-s0)
				for j := range n { // token s0+j
					t := s0 + j
					o := r.core[(b*r.t+t)*h*dh+hh*dh : (b*r.t+t)*h*dh+(hh+1)*dh]
					qt := q[t*dh : (t+1)*dh]
					inter := F(math.Exp(-s * float64(j+1)))
					for x := range dh { // inter-block: q · state decayed to t
						var acc F
						for y := range dh {
							acc += qt[y] * state[y*dh+x]
						}
						o[x] = inter * acc
					}
					for u := s0; u <= t; u++ { // intra-block: decayed causal attention
						var qk F
						for y := range dh {
							qk += qt[y] * k[u*dh+y]
						}
						w := qk * F(math.Exp(-s*float64(t-u)))
						for x := range dh {
							o[x] += w * v[u*dh+x]
						}
					}
				}
				// Carry the state to the end of the block.
				decay := F(math.Exp(-s * float64(n)))
				for y := range dh {
					for x := range dh {
						state[y*dh+x] *= decay
					}
				}
				for u := s0; u < s0+n; u++ {
					w := F(math.Exp(-s * float64(s0+n-1-u)))
					for y := range dh {
						ky := w * k[u*dh+y]
						for x := range dh {
							state[y*dh+x] += ky * v[u*dh+x]
						}
					}
				}
			}
		}
	}
	return r.pack(prec, r.finish(), kv)
}

func (r *lightningRun[F]) pack(prec Precision, out, kv []F) (LightningOutput, error) {
	h, dh := r.l.w.Heads, r.l.w.HeadDim
	var o LightningOutput
	var err error
	for _, x := range []struct {
		dst   *tensor.Tensor
		data  []F
		shape []int
	}{
		{&o.Out, out, []int{r.rows, r.t, r.l.hidden}}, {&o.Core, r.core, []int{r.rows, r.t, h * dh}},
		{&o.Q, r.q, []int{r.rows, h, r.t, dh}}, {&o.K, r.k, []int{r.rows, h, r.t, dh}}, {&o.V, r.v, []int{r.rows, h, r.t, dh}},
		{&o.KV, kv, []int{r.rows, h, dh, dh}},
	} {
		if x.data == nil {
			continue
		}
		if *x.dst, err = toTensor(prec, x.data, x.shape...); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Prefill runs the whole input through the full path from a zero state and
// leaves the final state in v.
func (l *Lightning) Prefill(hidden tensor.Tensor, v lightning.View) (LightningOutput, lightning.View, error) {
	prec, err := checkViewDType(v.DType())
	if err != nil {
		return LightningOutput{}, v, err
	}
	out, err := l.Forward(hidden, prec)
	if err != nil {
		return out, v, err
	}
	v, err = v.UpdateKeyValue(out.KV)
	return out, v, err
}

func checkViewDType(d tensor.DType) (Precision, error) {
	if err := checkPrecision(d); err != nil {
		return 0, fmt.Errorf("cached path: %w (the cache dtype is the precision)", err)
	}
	return d, nil
}

// Step runs one token per row (hidden (B, 1, hidden)) through the cache
// view v: the state advances by the token (kv = exp(-s)·kv + kᵀv) and the
// output reads q · kv.
func (l *Lightning) Step(hidden tensor.Tensor, v lightning.View) (LightningOutput, lightning.View, error) {
	prec, err := checkViewDType(v.DType())
	if err != nil {
		return LightningOutput{}, v, err
	}
	if prec == tensor.Float64 {
		return lightningStepAt[float64](l, hidden, v, prec)
	}
	return lightningStepAt[float32](l, hidden, v, prec)
}

func lightningStepAt[F float](l *Lightning, hidden tensor.Tensor, v lightning.View, prec Precision) (LightningOutput, lightning.View, error) {
	r, err := project[F](l, hidden)
	if err != nil {
		return LightningOutput{}, v, err
	}
	if r.t != 1 {
		return LightningOutput{}, v, fmt.Errorf("%w: a step takes 1 token per row, got %d", ErrInput, r.t)
	}
	h, dh := l.w.Heads, l.w.HeadDim
	kT, err := toTensor(prec, r.k, r.rows, h, 1, dh)
	if err != nil {
		return LightningOutput{}, v, err
	}
	vT, err := toTensor(prec, r.v, r.rows, h, 1, dh)
	if err != nil {
		return LightningOutput{}, v, err
	}
	if v, err = v.Update(kT, vT, l.slopes); err != nil {
		return LightningOutput{}, v, err
	}
	kv := vec[F](v.KeyValue())
	for b := range r.rows {
		for hh := range h {
			state := kv[(b*h+hh)*dh*dh : (b*h+hh+1)*dh*dh]
			q := r.q[(b*h+hh)*dh : (b*h+hh+1)*dh]
			o := r.core[b*h*dh+hh*dh : b*h*dh+(hh+1)*dh]
			for x := range dh {
				var acc F
				for y := range dh {
					acc += q[y] * state[y*dh+x]
				}
				o[x] = acc
			}
		}
	}
	out, err := r.pack(prec, r.finish(), nil)
	return out, v, err
}
