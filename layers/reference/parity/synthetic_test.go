package parity_test

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

// This file checks that the harness assumes nothing about the golden files'
// sizes. It builds case files with other dimensions, batch sizes, group
// counts and seeds, with the golden files' tensor and axis names, whose
// expected outputs come from a plain implementation of the recurrences of
// golden/README.md written below: naive per-token loops (a dense masked
// softmax for attention), in float64 for outputs_float64 and in float32 on
// inputs rounded to float32 for outputs_float32, sharing no code with
// layers/reference. Every check of parity.Run must pass on them.

// nd is a case-file tensor: row-major data with named axes.
type nd struct {
	Shape []int     `json:"shape"`
	Axes  []string  `json:"axes"`
	DType string    `json:"dtype"`
	Data  []float64 `json:"data"`
}

func newND(axes []string, shape ...int) *nd {
	if len(axes) != len(shape) {
		panic(fmt.Sprintf("axes %q for shape %v", axes, shape))
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	return &nd{Shape: slices.Clone(shape), Axes: slices.Clone(axes), DType: "float64", Data: make([]float64, n)}
}

func (t *nd) off(idx []int) int {
	if len(idx) != len(t.Shape) {
		panic(fmt.Sprintf("index %v into shape %v", idx, t.Shape))
	}
	o := 0
	for i, x := range idx {
		if x < 0 || x >= t.Shape[i] {
			panic(fmt.Sprintf("index %v into shape %v", idx, t.Shape))
		}
		o = o*t.Shape[i] + x
	}
	return o
}

func (t *nd) at(idx ...int) float64     { return t.Data[t.off(idx)] }
func (t *nd) set(v float64, idx ...int) { t.Data[t.off(idx)] = v }

func (t *nd) clone() *nd {
	c := *t
	c.Shape, c.Axes, c.Data = slices.Clone(t.Shape), slices.Clone(t.Axes), slices.Clone(t.Data)
	return &c
}

// transpose returns the same tensor stored with its axes in the given order
// (by name).
func (t *nd) transpose(axes ...string) *nd {
	perm := make([]int, len(axes))
	shape := make([]int, len(axes))
	for i, a := range axes {
		perm[i] = slices.Index(t.Axes, a)
		if perm[i] < 0 || len(axes) != len(t.Axes) {
			panic(fmt.Sprintf("transpose %q to %q", t.Axes, axes))
		}
		shape[i] = t.Shape[perm[i]]
	}
	out := newND(axes, shape...)
	out.DType = t.DType
	idx, src := make([]int, len(axes)), make([]int, len(axes))
	for k := range out.Data {
		for i, p := range perm {
			src[p] = idx[i]
		}
		out.Data[k] = t.Data[t.off(src)]
		for i := len(idx) - 1; i >= 0; i-- {
			if idx[i]++; idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return out
}

// caseJSON is a case file (schema in golden/README.md).
type caseJSON struct {
	Case   string         `json:"case"`
	Config map[string]any `json:"config"`
	Inputs map[string]*nd `json:"inputs"`
	Out64  map[string]*nd `json:"outputs_float64"`
	Out32  map[string]*nd `json:"outputs_float32"`
}

// shuffle stores the named tensors with their axes in another order.
func (c *caseJSON) shuffle(inputs, outputs map[string][]string) {
	for name, axes := range inputs {
		c.Inputs[name] = c.Inputs[name].transpose(axes...)
	}
	for name, axes := range outputs {
		c.Out64[name] = c.Out64[name].transpose(axes...)
		c.Out32[name] = c.Out32[name].transpose(axes...)
	}
}

func (c *caseJSON) marshal(t *testing.T) []byte {
	data, err := json.Marshal(c)
	require.NoError(t, err)
	return data
}

// withOutputs runs an oracle in float64 and float32 and stores its outputs.
func (c *caseJSON) withOutputs(o64, o32 map[string]*nd) *caseJSON {
	for _, t := range o32 {
		t.DType = "float32"
	}
	c.Out64, c.Out32 = o64, o32
	return c
}

// rnd fills tensors with seeded uniform values.
type rnd struct{ r *rand.Rand }

func newRnd(seed uint64) rnd { return rnd{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))} }

// uniform returns a tensor of values uniform in [-scale, scale).
func (g rnd) uniform(scale float64, axes []string, shape ...int) *nd {
	t := newND(axes, shape...)
	for i := range t.Data {
		t.Data[i] = scale * (2*g.r.Float64() - 1)
	}
	return t
}

// ax is shorthand for an axis-name list.
func ax(names ...string) []string { return names }

// The scalar functions of the README, in precision T.
type float interface{ ~float32 | ~float64 }

func exp[T float](x T) T      { return T(math.Exp(float64(x))) }
func sigmoid[T float](x T) T  { return 1 / (1 + exp(-x)) }
func silu[T float](x T) T     { return x * sigmoid(x) }
func softplus[T float](x T) T { return T(math.Log(1 + math.Exp(float64(x)))) }
func sqrt[T float](x T) T     { return T(math.Sqrt(float64(x))) }

// ---- Mamba (v1) -------------------------------------------------------------

type mamba1Cfg struct {
	seed                 uint64
	module, convBias     bool
	b, t, i, n, k, r, dm int
	splits               []int
}

func (c mamba1Cfg) build() *caseJSON {
	g := newRnd(c.seed)
	in := map[string]*nd{}
	conv, bias := "conv_weight", "conv_bias"
	if c.module {
		conv, bias = "conv1d_weight", "conv1d_bias"
		in["hidden_states"] = g.uniform(1, ax("batch", "seq", "d_model"), c.b, c.t, c.dm)
		in["in_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.dm)), ax("2*d_inner(x then z)", "d_model"), 2*c.i, c.dm)
		in["x_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.i)), ax("dt_rank+2*d_state(dt,B,C)", "d_inner"), c.r+2*c.n, c.i)
		in["dt_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.r)), ax("d_inner", "dt_rank"), c.i, c.r)
		in["dt_proj_bias"] = g.uniform(0.5, ax("d_inner"), c.i)
		in["out_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.i)), ax("d_model", "d_inner"), c.dm, c.i)
	} else {
		for _, name := range []string{"x", "z", "dt"} {
			in[name] = g.uniform(1, ax("batch", "seq", "d_inner"), c.b, c.t, c.i)
		}
		in["B"] = g.uniform(1, ax("batch", "seq", "d_state"), c.b, c.t, c.n)
		in["C"] = g.uniform(1, ax("batch", "seq", "d_state"), c.b, c.t, c.n)
		in["dt_bias"] = g.uniform(0.5, ax("d_inner"), c.i)
	}
	in[conv] = g.uniform(0.7, ax("d_inner", "d_conv"), c.i, c.k)
	if c.convBias {
		in[bias] = g.uniform(0.3, ax("d_inner"), c.i)
	}
	in["A_log"] = g.uniform(1, ax("d_inner", "d_state"), c.i, c.n)
	in["D"] = g.uniform(1, ax("d_inner"), c.i)
	if !c.module { // the golden inner file carries A too; the harness must ignore it
		a := in["A_log"].clone()
		for j, v := range a.Data {
			a.Data[j] = -math.Exp(v)
		}
		in["A"] = a
	}
	kind := "mamba1_inner"
	cfg := map[string]any{"batch": c.b, "seqlen": c.t, "d_inner": c.i, "d_state": c.n, "d_conv": c.k, "prefill_splits": c.splits}
	if c.module {
		kind = "mamba1_module"
		cfg["d_model"], cfg["dt_rank"], cfg["bias"], cfg["conv_bias"] = c.dm, c.r, false, c.convBias
	}
	cj := &caseJSON{Case: kind, Config: cfg, Inputs: in}
	return cj.withOutputs(mamba1Oracle[float64](c, in), mamba1Oracle[float32](c, in))
}

// mamba1Oracle runs the README's Mamba recurrence token by token.
func mamba1Oracle[T float](c mamba1Cfg, in map[string]*nd) map[string]*nd {
	w := func(name string, idx ...int) T { return T(in[name].at(idx...)) }
	conv, bias := "conv_weight", "conv_bias"
	outName, outAxis, outDim := "y", "d_inner", c.i
	if c.module {
		conv, bias = "conv1d_weight", "conv1d_bias"
		outName, outAxis, outDim = "out", "d_model", c.dm
	}
	out := newND(ax("batch", "seq", outAxis), c.b, c.t, outDim)
	convOut := newND(ax("batch", "seq", "d_inner"), c.b, c.t, c.i)
	convTraj := newND(ax("after_token", "batch", "d_inner", "d_conv"), c.t, c.b, c.i, c.k)
	ssmTraj := newND(ax("after_token", "batch", "d_inner", "d_state"), c.t, c.b, c.i, c.n)
	for b := range c.b {
		window := make([]T, c.i*c.k) // conv_state (d_inner, d_conv), newest input in column K-1
		h := make([]T, c.i*c.n)      // ssm_state (d_inner, d_state)
		for t := range c.t {
			x, z := make([]T, c.i), make([]T, c.i)
			for i := range c.i {
				if c.module { // in_proj: x then z
					for m := range c.dm {
						x[i] += w("in_proj_weight", i, m) * w("hidden_states", b, t, m)
						z[i] += w("in_proj_weight", c.i+i, m) * w("hidden_states", b, t, m)
					}
				} else {
					x[i], z[i] = w("x", b, t, i), w("z", b, t, i)
				}
			}
			cv := make([]T, c.i)
			for i := range c.i {
				for k := 0; k < c.k-1; k++ {
					window[i*c.k+k] = window[i*c.k+k+1]
				}
				window[i*c.k+c.k-1] = x[i]
				var s T
				for k := range c.k {
					s += window[i*c.k+k] * w(conv, i, k)
				}
				if c.convBias {
					s += w(bias, i)
				}
				cv[i] = silu(s)
			}
			dt, bt, ct := make([]T, c.i), make([]T, c.n), make([]T, c.n)
			if c.module { // x_proj: [dt_rank | B | C]; dt_proj; its bias before softplus
				dbl := make([]T, c.r+2*c.n)
				for j := range dbl {
					for i := range c.i {
						dbl[j] += w("x_proj_weight", j, i) * cv[i]
					}
				}
				for i := range c.i {
					var s T
					for r := range c.r {
						s += w("dt_proj_weight", i, r) * dbl[r]
					}
					dt[i] = softplus(s + w("dt_proj_bias", i))
				}
				copy(bt, dbl[c.r:])
				copy(ct, dbl[c.r+c.n:])
			} else {
				for i := range c.i {
					dt[i] = softplus(w("dt", b, t, i) + w("dt_bias", i))
				}
				for n := range c.n {
					bt[n], ct[n] = w("B", b, t, n), w("C", b, t, n)
				}
			}
			y := make([]T, c.i)
			for i := range c.i {
				var acc T
				for n := range c.n {
					a := -exp(w("A_log", i, n))
					h[i*c.n+n] = exp(dt[i]*a)*h[i*c.n+n] + dt[i]*cv[i]*bt[n]
					acc += h[i*c.n+n] * ct[n]
				}
				y[i] = (acc + w("D", i)*cv[i]) * silu(z[i])
			}
			if c.module {
				for m := range c.dm {
					var s T
					for i := range c.i {
						s += w("out_proj_weight", m, i) * y[i]
					}
					out.set(float64(s), b, t, m)
				}
			} else {
				for i := range c.i {
					out.set(float64(y[i]), b, t, i)
				}
			}
			for i := range c.i {
				convOut.set(float64(cv[i]), b, t, i)
				for k := range c.k {
					convTraj.set(float64(window[i*c.k+k]), t, b, i, k)
				}
				for n := range c.n {
					ssmTraj.set(float64(h[i*c.n+n]), t, b, i, n)
				}
			}
		}
	}
	res := map[string]*nd{outName + "_full": out, outName + "_step": out.clone(),
		"conv_state_traj": convTraj, "ssm_state_traj": ssmTraj,
		"conv_state_final": lastEntry(convTraj), "ssm_state_final": lastEntry(ssmTraj)}
	if !c.module {
		res["conv_out_full"], res["conv_out_step"] = convOut, convOut.clone()
	}
	return res
}

// lastEntry returns the last entry along a trajectory's after_token axis.
func lastEntry(traj *nd) *nd {
	t := newND(traj.Axes[1:], traj.Shape[1:]...)
	copy(t.Data, traj.Data[len(traj.Data)-len(t.Data):])
	return t
}

// ---- Mamba2 -----------------------------------------------------------------

type mamba2Cfg struct {
	seed                  uint64
	module, convBias      bool
	b, t, h, p, g, n, k   int
	dm                    int
	normEps               float64 // 0: leave config.norm_eps out (the default 1e-5)
	splits                []int
	inner, convDim, inPrj int
}

func (c mamba2Cfg) dims() mamba2Cfg {
	c.inner = c.h * c.p
	c.convDim = c.inner + 2*c.g*c.n
	c.inPrj = c.inner + c.convDim + c.h
	return c
}

func (c mamba2Cfg) build() *caseJSON {
	c = c.dims()
	g := newRnd(c.seed)
	in := map[string]*nd{}
	conv, bias := "conv_weight", "conv_bias"
	if c.module {
		conv, bias = "conv1d_weight", "conv1d_bias"
		in["hidden_states"] = g.uniform(1, ax("batch", "seq", "d_model"), c.b, c.t, c.dm)
		in["in_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.dm)), ax("d_in_proj(z|x|B|C|dt)", "d_model"), c.inPrj, c.dm)
		in["norm_weight"] = g.uniform(1, ax("d_inner"), c.inner)
		in["out_proj_weight"] = g.uniform(1/math.Sqrt(float64(c.inner)), ax("d_model", "d_inner"), c.dm, c.inner)
	} else {
		in["xBC"] = g.uniform(1, ax("batch", "seq", "conv_dim(x|B(g,n)|C(g,n))"), c.b, c.t, c.convDim)
		in["z"] = g.uniform(1, ax("batch", "seq", "d_inner(h,p)"), c.b, c.t, c.inner)
		in["dt"] = g.uniform(1, ax("batch", "seq", "n_heads"), c.b, c.t, c.h)
	}
	in[conv] = g.uniform(0.7, ax("conv_dim", "d_conv"), c.convDim, c.k)
	if c.convBias {
		in[bias] = g.uniform(0.3, ax("conv_dim"), c.convDim)
	}
	in["dt_bias"] = g.uniform(0.5, ax("n_heads"), c.h)
	in["A_log"] = g.uniform(1, ax("n_heads"), c.h)
	in["D"] = g.uniform(1, ax("n_heads"), c.h)
	cfg := map[string]any{"batch": c.b, "seqlen": c.t, "n_heads": c.h, "head_dim": c.p, "n_groups": c.g, "d_state": c.n,
		"d_conv": c.k, "d_inner": c.inner, "conv_dim": c.convDim, "chunk_size": 4, "prefill_splits": c.splits}
	kind := "mamba2_inner"
	if c.module {
		kind = "mamba2_module"
		cfg["d_model"], cfg["d_in_proj"], cfg["rmsnorm"], cfg["norm_before_gate"] = c.dm, c.inPrj, true, false
		cfg["norm_group_size"], cfg["D_has_hdim"], cfg["bias"], cfg["conv_bias"] = c.inner/c.g, false, false, c.convBias
		if c.normEps != 0 {
			cfg["norm_eps"] = c.normEps
		}
	}
	cj := &caseJSON{Case: kind, Config: cfg, Inputs: in}
	return cj.withOutputs(mamba2Oracle[float64](c, in), mamba2Oracle[float32](c, in))
}

// mamba2Oracle runs the README's Mamba2 recurrence token by token.
func mamba2Oracle[T float](c mamba2Cfg, in map[string]*nd) map[string]*nd {
	w := func(name string, idx ...int) T { return T(in[name].at(idx...)) }
	conv, bias := "conv_weight", "conv_bias"
	outName, outAxis, outDim := "y", "d_inner(h,p)", c.inner
	if c.module {
		conv, bias = "conv1d_weight", "conv1d_bias"
		outName, outAxis, outDim = "out", "d_model", c.dm
	}
	eps := T(1e-5)
	if c.normEps != 0 {
		eps = T(c.normEps)
	}
	gn := c.g * c.n
	out := newND(ax("batch", "seq", outAxis), c.b, c.t, outDim)
	convOut := newND(ax("batch", "seq", "conv_dim"), c.b, c.t, c.convDim)
	convTraj := newND(ax("after_token", "batch", "conv_dim", "d_conv"), c.t, c.b, c.convDim, c.k)
	ssmTraj := newND(ax("after_token", "batch", "n_heads", "head_dim", "d_state"), c.t, c.b, c.h, c.p, c.n)
	for b := range c.b {
		window := make([]T, c.convDim*c.k)
		s := make([]T, c.h*c.p*c.n) // (heads, head_dim, d_state)
		for t := range c.t {
			z, xbc, dtRaw := make([]T, c.inner), make([]T, c.convDim), make([]T, c.h)
			if c.module { // in_proj output order: z | xBC | dt
				proj := make([]T, c.inPrj)
				for j := range proj {
					for m := range c.dm {
						proj[j] += w("in_proj_weight", j, m) * w("hidden_states", b, t, m)
					}
				}
				copy(z, proj)
				copy(xbc, proj[c.inner:])
				copy(dtRaw, proj[c.inner+c.convDim:])
			} else {
				for j := range z {
					z[j] = w("z", b, t, j)
				}
				for j := range xbc {
					xbc[j] = w("xBC", b, t, j)
				}
				for j := range dtRaw {
					dtRaw[j] = w("dt", b, t, j)
				}
			}
			cv := make([]T, c.convDim)
			for ch := range c.convDim {
				for k := 0; k < c.k-1; k++ {
					window[ch*c.k+k] = window[ch*c.k+k+1]
				}
				window[ch*c.k+c.k-1] = xbc[ch]
				var acc T
				for k := range c.k {
					acc += window[ch*c.k+k] * w(conv, ch, k)
				}
				if c.convBias {
					acc += w(bias, ch)
				}
				cv[ch] = silu(acc)
			}
			x, bm, cm := cv[:c.inner], cv[c.inner:c.inner+gn], cv[c.inner+gn:]
			y := make([]T, c.inner)
			for h := range c.h {
				grp := h / (c.h / c.g)
				dt := softplus(dtRaw[h] + w("dt_bias", h))
				a := -exp(w("A_log", h))
				for p := range c.p {
					var acc T
					for n := range c.n {
						at := (h*c.p+p)*c.n + n
						s[at] = exp(dt*a)*s[at] + dt*x[h*c.p+p]*bm[grp*c.n+n]
						acc += s[at] * cm[grp*c.n+n]
					}
					y[h*c.p+p] = acc + w("D", h)*x[h*c.p+p]
				}
			}
			for j := range y {
				y[j] *= silu(z[j])
			}
			if c.module { // gated RMSNorm per group of d_inner/G, then out_proj
				size := c.inner / c.g
				for g0 := 0; g0 < c.inner; g0 += size {
					var ms T
					for j := g0; j < g0+size; j++ {
						ms += y[j] * y[j]
					}
					r := sqrt(ms/T(size) + eps)
					for j := g0; j < g0+size; j++ {
						y[j] = y[j] / r * w("norm_weight", j)
					}
				}
				for m := range c.dm {
					var acc T
					for j := range y {
						acc += w("out_proj_weight", m, j) * y[j]
					}
					out.set(float64(acc), b, t, m)
				}
			} else {
				for j := range y {
					out.set(float64(y[j]), b, t, j)
				}
			}
			for ch := range c.convDim {
				convOut.set(float64(cv[ch]), b, t, ch)
				for k := range c.k {
					convTraj.set(float64(window[ch*c.k+k]), t, b, ch, k)
				}
			}
			for h := range c.h {
				for p := range c.p {
					for n := range c.n {
						ssmTraj.set(float64(s[(h*c.p+p)*c.n+n]), t, b, h, p, n)
					}
				}
			}
		}
	}
	res := map[string]*nd{outName + "_full": out, outName + "_step": out.clone(),
		"conv_state_traj": convTraj, "ssm_state_traj": ssmTraj,
		"conv_state_final": lastEntry(convTraj), "ssm_state_final": lastEntry(ssmTraj)}
	if !c.module {
		res["conv_out_full"], res["conv_out_step"] = convOut, convOut.clone()
	}
	return res
}

// ---- Lightning --------------------------------------------------------------

type lightningCfg struct {
	seed                 uint64
	b, t, hidden, h, dh  int
	layers, layer, block int // block 0: leave config.block_size out
	eps                  float64
	splits               []int
}

func (c lightningCfg) build() *caseJSON {
	g := newRnd(c.seed)
	hd := c.h * c.dh
	s := 1 / math.Sqrt(float64(c.hidden))
	in := map[string]*nd{
		"hidden_states":      g.uniform(1, ax("batch", "seq", "hidden"), c.b, c.t, c.hidden),
		"qkv_proj_weight":    g.uniform(s, ax("heads*3*head_dim(per head: q|k|v)", "hidden"), 3*hd, c.hidden),
		"output_gate_weight": g.uniform(s, ax("heads*head_dim", "hidden"), hd, c.hidden),
		"out_proj_weight":    g.uniform(1/math.Sqrt(float64(hd)), ax("hidden", "heads*head_dim"), c.hidden, hd),
		"norm_weight":        g.uniform(1, ax("heads*head_dim"), hd),
	}
	cfg := map[string]any{"batch": c.b, "seqlen": c.t, "hidden_size": c.hidden, "num_attention_heads": c.h, "head_dim": c.dh,
		"num_hidden_layers": c.layers, "layer_idx": c.layer, "hidden_act": "silu", "prefill_splits": c.splits}
	if c.block != 0 {
		cfg["block_size"] = c.block
	}
	if c.eps != 0 {
		cfg["rms_norm_eps"] = c.eps
	}
	cj := &caseJSON{Case: "lightning", Config: cfg, Inputs: in}
	return cj.withOutputs(lightningOracle[float64](c, in), lightningOracle[float32](c, in))
}

// lightningOracle runs the README's per-token lightning recurrence.
func lightningOracle[T float](c lightningCfg, in map[string]*nd) map[string]*nd {
	w := func(name string, idx ...int) T { return T(in[name].at(idx...)) }
	hd := c.h * c.dh
	eps := T(1e-6)
	if c.eps != 0 {
		eps = T(c.eps)
	}
	slope := newND(ax("heads"), c.h)
	factor := 1 - float64(c.layer)/(float64(c.layers)-1+1e-5) + 1e-5
	for h := range c.h {
		slope.Data[h] = float64(T(math.Pow(math.Pow(2, -8/float64(c.h)), float64(h+1)) * factor))
	}
	qkvAx := ax("batch", "heads", "seq", "head_dim")
	q, k, v := newND(qkvAx, c.b, c.h, c.t, c.dh), newND(qkvAx, c.b, c.h, c.t, c.dh), newND(qkvAx, c.b, c.h, c.t, c.dh)
	core := newND(ax("batch", "seq", "heads*head_dim"), c.b, c.t, hd)
	out := newND(ax("batch", "seq", "hidden"), c.b, c.t, c.hidden)
	traj := newND(ax("after_token", "batch", "heads", "head_dim(k)", "head_dim(v)"), c.t, c.b, c.h, c.dh, c.dh)
	for b := range c.b {
		kv := make([]T, c.h*c.dh*c.dh)
		for t := range c.t {
			proj := make([]T, 3*hd)
			gate := make([]T, hd)
			for j := range proj {
				for m := range c.hidden {
					proj[j] += w("qkv_proj_weight", j, m) * w("hidden_states", b, t, m)
				}
			}
			for j := range gate {
				for m := range c.hidden {
					gate[j] += w("output_gate_weight", j, m) * w("hidden_states", b, t, m)
				}
				gate[j] = sigmoid(gate[j])
			}
			o := make([]T, hd)
			for h := range c.h {
				qh, kh, vh := make([]T, c.dh), make([]T, c.dh), make([]T, c.dh)
				for j := range c.dh {
					qh[j], kh[j], vh[j] = silu(proj[h*3*c.dh+j]), silu(proj[h*3*c.dh+c.dh+j]), silu(proj[h*3*c.dh+2*c.dh+j])
					q.set(float64(qh[j]), b, h, t, j)
					k.set(float64(kh[j]), b, h, t, j)
					v.set(float64(vh[j]), b, h, t, j)
				}
				decay := exp(-T(slope.Data[h]))
				st := kv[h*c.dh*c.dh : (h+1)*c.dh*c.dh]
				for y := range c.dh {
					for x := range c.dh {
						st[y*c.dh+x] = decay*st[y*c.dh+x] + kh[y]*vh[x]
					}
				}
				for x := range c.dh {
					var acc T
					for y := range c.dh {
						acc += qh[y] * st[y*c.dh+x]
					}
					o[h*c.dh+x] = acc
				}
				for y := range c.dh {
					for x := range c.dh {
						traj.set(float64(st[y*c.dh+x]), t, b, h, y, x)
					}
				}
			}
			var ms T
			for j := range o {
				core.set(float64(o[j]), b, t, j)
				ms += o[j] * o[j]
			}
			r := sqrt(ms/T(hd) + eps)
			u := make([]T, hd)
			for j := range u {
				u[j] = gate[j] * (o[j] / r * w("norm_weight", j))
			}
			for m := range c.hidden {
				var acc T
				for j := range u {
					acc += w("out_proj_weight", m, j) * u[j]
				}
				out.set(float64(acc), b, t, m)
			}
		}
	}
	return map[string]*nd{"slope_rate": slope, "q": q, "k": k, "v": v,
		"core_full": core, "core_step": core.clone(), "out_full": out, "out_step": out.clone(),
		"kv_state_final": lastEntry(traj), "kv_state_traj": traj}
}

// ---- Grouped-query attention ------------------------------------------------

type attentionCfg struct {
	seed             uint64
	b, t, hq, hkv, d int
	scaling          float64 // 0: leave config.scaling out (head_dim^-0.5)
	pads             []int   // left padding of each row in the padded run
	splits           []int
}

func (c attentionCfg) build() *caseJSON {
	g := newRnd(c.seed)
	in := map[string]*nd{
		"q": g.uniform(1, ax("batch", "q_heads", "seq", "head_dim"), c.b, c.hq, c.t, c.d),
		"k": g.uniform(1, ax("batch", "kv_heads", "seq", "head_dim"), c.b, c.hkv, c.t, c.d),
		"v": g.uniform(1, ax("batch", "kv_heads", "seq", "head_dim"), c.b, c.hkv, c.t, c.d),
	}
	mask := newND(ax("batch", "seq"), c.b, c.t)
	for b := range c.b {
		for j := c.pads[b]; j < c.t; j++ {
			mask.set(1, b, j)
		}
	}
	in["attention_mask_padded"] = mask
	cfg := map[string]any{"batch": c.b, "seqlen": c.t, "num_attention_heads": c.hq, "num_key_value_heads": c.hkv,
		"head_dim": c.d, "num_key_value_groups": c.hq / c.hkv, "prefill_splits": c.splits}
	if c.scaling != 0 {
		cfg["scaling"] = c.scaling
	}
	cj := &caseJSON{Case: "attention_gqa", Config: cfg, Inputs: in}
	return cj.withOutputs(attentionOracle[float64](c, in), attentionOracle[float32](c, in))
}

// attentionOracle computes dense masked softmax attention for the unpadded
// and the left-padded mask.
func attentionOracle[T float](c attentionCfg, in map[string]*nd) map[string]*nd {
	w := func(name string, idx ...int) T { return T(in[name].at(idx...)) }
	scale := T(1 / math.Sqrt(float64(c.d)))
	if c.scaling != 0 {
		scale = T(c.scaling)
	}
	lowest := -math.MaxFloat64 // the dtype's most negative finite value
	if _, f32 := any(scale).(float32); f32 {
		lowest = -math.MaxFloat32
	}
	res := map[string]*nd{}
	for _, mode := range []string{"nopad", "leftpad"} {
		mask := newND(ax("batch", "seq"), c.b, c.t)
		for b := range c.b {
			for j := range c.t {
				if mode == "nopad" || in["attention_mask_padded"].at(b, j) == 1 {
					mask.set(1, b, j)
				}
			}
		}
		valid := mask.clone()
		out := newND(ax("batch", "seq", "q_heads", "head_dim"), c.b, c.t, c.hq, c.d)
		logits := make([]T, c.t)
		for b := range c.b {
			for h := range c.hq {
				kh := h / (c.hq / c.hkv)
				for i := range c.t {
					if mask.at(b, i) == 0 { // a query of pure padding: zero
						continue
					}
					top := T(lowest)
					for j := range c.t {
						var s T
						for x := range c.d {
							s += w("q", b, h, i, x) * w("k", b, kh, j, x)
						}
						logits[j] = s * scale
						if j > i || mask.at(b, j) == 0 {
							logits[j] = T(lowest)
						}
						top = max(top, logits[j])
					}
					var sum T
					for j := range logits {
						logits[j] = exp(logits[j] - top)
						sum += logits[j]
					}
					for x := range c.d {
						var acc T
						for j := range c.t {
							acc += logits[j] * w("v", b, kh, j, x)
						}
						out.set(float64(acc/sum), b, i, h, x)
					}
				}
			}
		}
		kc, vc := newND(in["k"].Axes, in["k"].Shape...), newND(in["v"].Axes, in["v"].Shape...)
		for j := range kc.Data {
			kc.Data[j], vc.Data[j] = float64(T(in["k"].Data[j])), float64(T(in["v"].Data[j]))
		}
		res[mode+"_attention_mask"], res[mode+"_query_valid"] = mask, valid
		res[mode+"_out_full"], res[mode+"_out_step"] = out, out.clone()
		res[mode+"_k_cache_final"], res[mode+"_v_cache_final"] = kc, vc
	}
	return res
}

// ---- The tests --------------------------------------------------------------

// synthCase is a generated case file and the number of checks a run of it
// must report (every schedule of every path).
type synthCase struct {
	name   string
	file   *caseJSON
	checks int
}

func recurrentChecks(module bool, splits int) int {
	per := 4 // output, conv_state_traj, ssm_state_traj, conv_out
	if module {
		per = 3
	}
	return per + (1+splits)*per
}

func synthCases() []synthCase {
	var cases []synthCase
	add := func(name string, f *caseJSON, checks int) {
		cases = append(cases, synthCase{name, f, checks})
	}

	// Mamba (v1), inner form.
	for _, c := range []mamba1Cfg{
		{seed: 1, b: 1, t: 1, i: 3, n: 2, k: 2, convBias: true, splits: []int{1}},
		{seed: 2, b: 3, t: 5, i: 5, n: 4, k: 4, splits: []int{1, 3, 5}},
		{seed: 3, b: 2, t: 11, i: 2, n: 1, k: 4, convBias: true, splits: []int{2, 11}},
		{seed: 4, b: 1, t: 11, i: 4, n: 3, k: 2, convBias: true, splits: []int{1, 6, 11}},
	} {
		f := c.build()
		if c.seed == 2 { // stored in other axis orders: the harness must permute by name
			f.shuffle(map[string][]string{
				"x":           ax("seq", "batch", "d_inner"),
				"B":           ax("d_state", "seq", "batch"),
				"conv_weight": ax("d_conv", "d_inner"),
				"A_log":       ax("d_state", "d_inner"),
			}, map[string][]string{
				"y_full":          ax("d_inner", "batch", "seq"),
				"conv_state_traj": ax("d_conv", "batch", "after_token", "d_inner"),
				"ssm_state_final": ax("d_state", "d_inner", "batch"),
			})
		}
		add(fmt.Sprintf("mamba1_inner/b%d_t%d_i%d_n%d_k%d", c.b, c.t, c.i, c.n, c.k), f, recurrentChecks(false, len(c.splits)))
	}
	// Mamba (v1), module form.
	for _, c := range []mamba1Cfg{
		{seed: 11, module: true, b: 1, t: 5, dm: 3, i: 6, n: 2, k: 2, r: 2, convBias: true, splits: []int{1, 5}},
		{seed: 12, module: true, b: 3, t: 11, dm: 4, i: 8, n: 3, k: 4, r: 1, splits: []int{4, 11}},
		{seed: 13, module: true, b: 2, t: 1, dm: 2, i: 4, n: 5, k: 3, r: 3, convBias: true, splits: []int{1}},
	} {
		f := c.build()
		if c.seed == 12 {
			f.shuffle(map[string][]string{
				"hidden_states":  ax("d_model", "seq", "batch"),
				"in_proj_weight": ax("d_model", "2*d_inner(x then z)"),
				"x_proj_weight":  ax("d_inner", "dt_rank+2*d_state(dt,B,C)"),
			}, map[string][]string{"out_step": ax("seq", "d_model", "batch")})
		}
		add(fmt.Sprintf("mamba1_module/b%d_t%d_dm%d_i%d_n%d_k%d_r%d", c.b, c.t, c.dm, c.i, c.n, c.k, c.r), f, recurrentChecks(true, len(c.splits)))
	}
	// Mamba2, inner form: one group, heads = groups, heads = 4·groups.
	for _, c := range []mamba2Cfg{
		{seed: 21, b: 1, t: 5, h: 2, p: 3, g: 1, n: 2, k: 2, convBias: true, splits: []int{1, 5}},
		{seed: 22, b: 3, t: 11, h: 2, p: 2, g: 2, n: 3, k: 4, splits: []int{3, 11}},
		{seed: 23, b: 2, t: 1, h: 8, p: 1, g: 2, n: 2, k: 4, convBias: true, splits: []int{1}},
		{seed: 24, b: 3, t: 5, h: 4, p: 2, g: 1, n: 1, k: 3, convBias: true, splits: []int{2, 4}},
	} {
		f := c.build()
		if c.seed == 22 {
			f.shuffle(map[string][]string{
				"xBC":         ax("conv_dim(x|B(g,n)|C(g,n))", "batch", "seq"),
				"dt":          ax("n_heads", "seq", "batch"),
				"conv_weight": ax("d_conv", "conv_dim"),
			}, map[string][]string{
				"ssm_state_traj": ax("d_state", "batch", "head_dim", "after_token", "n_heads"),
				"conv_out_step":  ax("conv_dim", "seq", "batch"),
			})
		}
		add(fmt.Sprintf("mamba2_inner/b%d_t%d_h%d_p%d_g%d_n%d_k%d", c.b, c.t, c.h, c.p, c.g, c.n, c.k), f, recurrentChecks(false, len(c.splits)))
	}
	// Mamba2, module form.
	for _, c := range []mamba2Cfg{
		{seed: 31, module: true, b: 3, t: 5, dm: 3, h: 4, p: 2, g: 1, n: 2, k: 4, normEps: 1e-3, splits: []int{2, 5}},
		{seed: 32, module: true, b: 1, t: 11, dm: 5, h: 2, p: 3, g: 2, n: 2, k: 2, convBias: true, splits: []int{1, 11}},
		{seed: 33, module: true, b: 2, t: 6, dm: 4, h: 8, p: 2, g: 2, n: 3, k: 3, convBias: true, splits: []int{3}},
	} {
		f := c.build()
		if c.seed == 33 {
			f.shuffle(map[string][]string{"in_proj_weight": ax("d_model", "d_in_proj(z|x|B|C|dt)")},
				map[string][]string{"out_full": ax("d_model", "batch", "seq")})
		}
		add(fmt.Sprintf("mamba2_module/b%d_t%d_dm%d_h%d_p%d_g%d_n%d_k%d", c.b, c.t, c.dm, c.h, c.p, c.g, c.n, c.k), f, recurrentChecks(true, len(c.splits)))
	}
	// Lightning: block sizes 1, 4, beyond the sequence and the default;
	// the first and the last layer.
	for _, c := range []lightningCfg{
		{seed: 41, b: 1, t: 5, hidden: 6, h: 2, dh: 4, layers: 3, layer: 0, block: 1, splits: []int{1, 5}},
		{seed: 42, b: 3, t: 11, hidden: 5, h: 3, dh: 2, layers: 4, layer: 3, block: 4, splits: []int{4, 11}},
		{seed: 43, b: 2, t: 11, hidden: 8, h: 1, dh: 16, layers: 1, layer: 0, block: 16, eps: 1e-4, splits: []int{11}},
		{seed: 44, b: 2, t: 7, hidden: 4, h: 4, dh: 3, layers: 2, layer: 1, splits: []int{1, 3}},
		{seed: 45, b: 1, t: 1, hidden: 3, h: 2, dh: 2, layers: 5, layer: 2, block: 4, splits: []int{1}},
	} {
		f := c.build()
		if c.seed == 42 {
			f.shuffle(map[string][]string{
				"hidden_states":   ax("hidden", "batch", "seq"),
				"qkv_proj_weight": ax("hidden", "heads*3*head_dim(per head: q|k|v)"),
			}, map[string][]string{
				"q":             ax("head_dim", "seq", "heads", "batch"),
				"kv_state_traj": ax("head_dim(v)", "after_token", "heads", "batch", "head_dim(k)"),
			})
		}
		add(fmt.Sprintf("lightning/b%d_t%d_h%d_dh%d_layer%dof%d_block%d", c.b, c.t, c.h, c.dh, c.layer, c.layers, c.block), f, 7+(1+len(c.splits))*3)
	}
	// Grouped-query attention: as many query heads as kv heads and four
	// times as many; head_dim 4, 12 (an inexact default scale) and 16; a
	// given scale; rows with no, some, all-but-one and all positions padded.
	for _, c := range []attentionCfg{
		{seed: 51, b: 1, t: 1, hq: 2, hkv: 2, d: 4, pads: []int{0}, splits: []int{1}},
		{seed: 52, b: 3, t: 11, hq: 8, hkv: 2, d: 16, pads: []int{0, 3, 10}, splits: []int{1, 5, 11}},
		{seed: 53, b: 3, t: 5, hq: 1, hkv: 1, d: 4, scaling: 0.7, pads: []int{2, 0, 5}, splits: []int{2, 5}},
		{seed: 54, b: 2, t: 6, hq: 4, hkv: 1, d: 12, pads: []int{1, 4}, splits: []int{3}},
	} {
		f := c.build()
		if c.seed == 52 {
			f.shuffle(map[string][]string{
				"q":                     ax("seq", "head_dim", "batch", "q_heads"),
				"v":                     ax("head_dim", "kv_heads", "seq", "batch"),
				"attention_mask_padded": ax("seq", "batch"),
			}, map[string][]string{
				"leftpad_out_step":      ax("q_heads", "seq", "head_dim", "batch"),
				"leftpad_query_valid":   ax("seq", "batch"),
				"nopad_k_cache_final":   ax("seq", "head_dim", "kv_heads", "batch"),
				"leftpad_v_cache_final": ax("head_dim", "batch", "seq", "kv_heads"),
			})
		}
		add(fmt.Sprintf("attention_gqa/b%d_t%d_hq%d_hkv%d_d%d", c.b, c.t, c.hq, c.hkv, c.d), f, 2*(2+len(c.splits))*2*3)
	}
	return cases
}

// TestSyntheticCases runs generated case files of other sizes through the
// harness: every schedule of every case must agree with the independent
// oracle within the default tolerances, and no schedule may be skipped.
func TestSyntheticCases(t *testing.T) {
	for _, sc := range synthCases() {
		t.Run(sc.name, func(t *testing.T) {
			res, err := parity.Run(sc.name, sc.file.marshal(t), parity.Options{})
			require.NoError(t, err)
			assert.Equal(t, sc.file.Case, res.Case)
			assert.Len(t, res.Checks, sc.checks)
			var worst64, worst32 float64
			for _, c := range res.Checks {
				assert.True(t, c.OK, "%s (against %s): f64 diff %.3g, f32 diff %.3g", c.Name, c.Reference, c.Diff64, c.Diff32)
				assert.Contains(t, sc.file.Out64, c.Reference, "check %s", c.Name)
				worst64, worst32 = max(worst64, c.Diff64), max(worst32, c.Diff32)
			}
			t.Logf("%d checks, worst diff %.2g (float64) and %.2g (float32)", len(res.Checks), worst64, worst32)
		})
	}
}

// A wrong reference value must fail exactly the checks compared with it, so
// the synthetic cases above could fail.
func TestSyntheticCorruptedOutputFails(t *testing.T) {
	for _, tc := range []struct {
		name, ref string
		file      *caseJSON
		prec      int // 64 or 32
	}{
		{"mamba1 y_step", "y_step", mamba1Cfg{seed: 61, b: 2, t: 4, i: 3, n: 2, k: 3, splits: []int{2}}.build(), 64},
		{"mamba2 ssm_state_traj", "ssm_state_traj", mamba2Cfg{seed: 62, b: 2, t: 4, h: 4, p: 1, g: 2, n: 2, k: 2, splits: []int{3}}.build(), 32},
		{"lightning kv_state_final", "kv_state_final", lightningCfg{seed: 63, b: 1, t: 4, hidden: 3, h: 2, dh: 2, layers: 2, block: 2, splits: []int{2}}.build(), 64},
		{"attention leftpad_out_step", "leftpad_out_step", attentionCfg{seed: 64, b: 2, t: 4, hq: 2, hkv: 1, d: 4, pads: []int{0, 1}, splits: []int{2}}.build(), 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			outs := tc.file.Out64
			if tc.prec == 32 {
				outs = tc.file.Out32
			}
			bad := outs[tc.ref].clone()
			bad.Data[len(bad.Data)-1] += 1e-3 // the last entry is reached by every schedule
			outs[tc.ref] = bad
			res, err := parity.Run(tc.name, tc.file.marshal(t), parity.Options{})
			require.NoError(t, err)
			require.False(t, res.OK())
			failed := 0
			for _, c := range res.Checks {
				assert.Equal(t, c.Reference != tc.ref, c.OK, "%s (against %s): f64 %.3g f32 %.3g", c.Name, c.Reference, c.Diff64, c.Diff32)
				if !c.OK {
					failed++
					d := c.Diff64
					if tc.prec == 32 {
						d = c.Diff32
					}
					assert.InDelta(t, 1e-3, d, 1e-5, c.Name)
				}
			}
			assert.Positive(t, failed)
		})
	}
}

// Axis names, not positions, say the layout: a square tensor whose data is
// transposed while its axis names stay put changes the results, and an axis
// name the harness does not know is an error naming the tensor.
func TestSyntheticAxisNamesMatter(t *testing.T) {
	f := mamba1Cfg{seed: 71, b: 2, t: 5, i: 4, n: 4, k: 4, splits: []int{2}}.build()
	res, err := parity.Run("square", f.marshal(t), parity.Options{})
	require.NoError(t, err)
	require.True(t, res.OK())

	for _, name := range []string{"conv_weight", "A_log"} {
		g := mamba1Cfg{seed: 71, b: 2, t: 5, i: 4, n: 4, k: 4, splits: []int{2}}.build()
		tr := g.Inputs[name].transpose(g.Inputs[name].Axes[1], g.Inputs[name].Axes[0])
		tr.Axes = slices.Clone(g.Inputs[name].Axes) // transposed data under the old names
		g.Inputs[name] = tr
		res, err := parity.Run("mislabelled", g.marshal(t), parity.Options{})
		require.NoError(t, err)
		assert.False(t, res.OK(), "%s transposed under the same axis names must change the results", name)
	}

	h := mamba1Cfg{seed: 72, b: 1, t: 2, i: 2, n: 1, k: 2, splits: []int{1}}.build()
	h.Inputs["x"].Axes[2] = "d_innr"
	_, err = parity.Run("typo.json", h.marshal(t), parity.Options{})
	require.ErrorIs(t, err, parity.ErrCase)
	assert.Contains(t, err.Error(), "typo.json")
	assert.Contains(t, err.Error(), "inputs.x")
	assert.Contains(t, err.Error(), "d_innr")
}

// The oracle itself: a hand-worked token of each recurrence, so that a
// mistake shared by the oracle and the harness would still be caught.
func TestSyntheticOracleByHand(t *testing.T) {
	t.Run("mamba1 inner, one channel, two tokens", func(t *testing.T) {
		c := mamba1Cfg{b: 1, t: 2, i: 1, n: 1, k: 2, convBias: true}
		in := map[string]*nd{
			"x": {Shape: []int{1, 2, 1}, Axes: ax("batch", "seq", "d_inner"), Data: []float64{1, 2}},
			"z": {Shape: []int{1, 2, 1}, Axes: ax("batch", "seq", "d_inner"), Data: []float64{0.5, -1}},
			// dt + dt_bias = 0, so dt = softplus(0) = ln 2; A = -exp(0) = -1: decay exp(-ln 2) = 1/2.
			"dt":          {Shape: []int{1, 2, 1}, Axes: ax("batch", "seq", "d_inner"), Data: []float64{0.25, 0.25}},
			"dt_bias":     {Shape: []int{1}, Axes: ax("d_inner"), Data: []float64{-0.25}},
			"B":           {Shape: []int{1, 2, 1}, Axes: ax("batch", "seq", "d_state"), Data: []float64{2, 4}},
			"C":           {Shape: []int{1, 2, 1}, Axes: ax("batch", "seq", "d_state"), Data: []float64{3, -1}},
			"conv_weight": {Shape: []int{1, 2}, Axes: ax("d_inner", "d_conv"), Data: []float64{0.5, 1}},
			"conv_bias":   {Shape: []int{1}, Axes: ax("d_inner"), Data: []float64{-0.5}},
			"A_log":       {Shape: []int{1, 1}, Axes: ax("d_inner", "d_state"), Data: []float64{0}},
			"D":           {Shape: []int{1}, Axes: ax("d_inner"), Data: []float64{2}},
		}
		sl := func(x float64) float64 { return x / (1 + math.Exp(-x)) }
		ln2 := math.Ln2
		c0 := sl(1*1 - 0.5)         // window [0, 1]
		c1 := sl(0.5*1 + 1*2 - 0.5) // window [1, 2]
		h0 := ln2 * c0 * 2          // from zero
		h1 := 0.5*h0 + ln2*c1*4     // decay 1/2
		y0 := (h0*3 + 2*c0) * sl(0.5)
		y1 := (h1*(-1) + 2*c1) * sl(-1)
		o := mamba1Oracle[float64](c, in)
		assert.InDeltaSlice(t, []float64{y0, y1}, o["y_full"].Data, 1e-15)
		assert.InDeltaSlice(t, []float64{c0, c1}, o["conv_out_full"].Data, 1e-15)
		assert.Equal(t, []float64{1, 2}, o["conv_state_final"].Data)
		assert.InDeltaSlice(t, []float64{h0, h1}, o["ssm_state_traj"].Data, 1e-15)
	})
	t.Run("attention, one head, padded first key", func(t *testing.T) {
		c := attentionCfg{b: 1, t: 3, hq: 1, hkv: 1, d: 1, scaling: 1, pads: []int{1}}
		in := map[string]*nd{
			"q":                     {Shape: []int{1, 1, 3, 1}, Axes: ax("batch", "q_heads", "seq", "head_dim"), Data: []float64{1, 2, 1}},
			"k":                     {Shape: []int{1, 1, 3, 1}, Axes: ax("batch", "kv_heads", "seq", "head_dim"), Data: []float64{5, 1, 0}},
			"v":                     {Shape: []int{1, 1, 3, 1}, Axes: ax("batch", "kv_heads", "seq", "head_dim"), Data: []float64{100, 10, 20}},
			"attention_mask_padded": {Shape: []int{1, 3}, Axes: ax("batch", "seq"), Data: []float64{0, 1, 1}},
		}
		o := attentionOracle[float64](c, in)
		// nopad: query 1 (q=2) sees keys 5, 1 → logits 10, 2.
		w := math.Exp(10) / (math.Exp(10) + math.Exp(2))
		assert.InDelta(t, 100*w+10*(1-w), o["nopad_out_full"].at(0, 1, 0, 0), 1e-12)
		// leftpad: query 0 is padding (zero), query 2 (q=1) sees keys 1, 0 → logits 1, 0.
		w = math.E / (math.E + 1)
		assert.InDeltaSlice(t, []float64{0, 10, 10*w + 20*(1-w)}, o["leftpad_out_full"].Data, 1e-12)
		assert.Equal(t, []float64{0, 1, 1}, o["leftpad_query_valid"].Data)
	})
}
