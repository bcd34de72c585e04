package parity

import (
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// axesOf names the layouts of a conv/SSM case's tensors.
type recurrentAxes struct {
	out, convOut, convState, ssmState []string
	outName                           string // "y" (inner) or "out" (module)
}

// recurrentRun is what a conv/SSM case needs from a mixer and its cache,
// for a view type V.
type recurrentRun[V any] struct {
	c       *caseFile
	rows, t int
	axes    recurrentAxes
	full    func() (reference.MixerOutput, error)
	newView func() (V, error)
	prefill func(n int, v V) (reference.MixerOutput, V, error) // tokens [0, n)
	step    func(s int, v V) (reference.MixerOutput, V, error) // token s
	states  func(v V) (conv, ssm tensor.Tensor)
}

// observe runs the full path and every schedule, and lists what to compare.
func (r recurrentRun[V]) observe(splits []int) ([]observation, error) {
	c, ax := r.c, r.axes
	hasConvOut := c.Out64["conv_out_full"].Data != nil
	full, err := r.full()
	if err != nil {
		return nil, err
	}
	obs := []observation{
		{check: "full/" + ax.outName, ref: ax.outName + "_full", axes: ax.out, got: full.Out.Float64s()},
		{check: "full/conv_state", ref: "conv_state_final", axes: ax.convState, got: full.ConvState.Float64s()},
		{check: "full/ssm_state", ref: "ssm_state_final", axes: ax.ssmState, got: full.SSMState.Float64s()},
	}
	if hasConvOut {
		obs = append(obs, observation{check: "full/conv_out", ref: "conv_out_full", axes: ax.convOut, got: full.ConvOut.Float64s()})
	}
	trajConv := append([]string{"after_token"}, ax.convState...)
	trajSSM := append([]string{"after_token"}, ax.ssmState...)
	for _, s := range schedules(r.t, splits) {
		v, err := r.newView()
		if err != nil {
			return nil, err
		}
		outs := newTokenSeq(r.rows, r.t, full.Out.Len()/(r.rows*r.t))
		convs := newTokenSeq(r.rows, r.t, full.ConvOut.Len()/(r.rows*r.t))
		var after []int
		var convTraj, ssmTraj []float64
		pos := 0
		for i, n := range s.chunks {
			var o reference.MixerOutput
			if s.name != "step" && i == 0 {
				o, v, err = r.prefill(n, v)
			} else {
				o, v, err = r.step(pos, v)
			}
			if err != nil {
				return nil, err
			}
			outs.put(pos, o.Out)
			convs.put(pos, o.ConvOut)
			pos += n
			cs, ss := r.states(v)
			after = append(after, pos-1)
			convTraj, ssmTraj = append(convTraj, cs.Float64s()...), append(ssmTraj, ss.Float64s()...)
		}
		base := s.name + "/"
		obs = append(obs,
			observation{check: base + ax.outName, ref: ax.outName + "_step", axes: ax.out, got: outs.data},
			observation{check: base + "conv_state_traj", ref: "conv_state_traj", axes: trajConv, rows: after, got: convTraj},
			observation{check: base + "ssm_state_traj", ref: "ssm_state_traj", axes: trajSSM, rows: after, got: ssmTraj})
		if hasConvOut {
			obs = append(obs, observation{check: base + "conv_out", ref: "conv_out_step", axes: ax.convOut, got: convs.data})
		}
	}
	return obs, nil
}

// optionalInput returns inputs.name, or the zero Tensor if the file has none.
func (c *caseFile) optionalInput(prec tensor.DType, name string, axes ...string) (tensor.Tensor, error) {
	if _, ok := c.Inputs[name]; !ok {
		return tensor.Tensor{}, nil
	}
	return c.input(prec, name, axes...)
}

func runMamba1(c *caseFile, prec tensor.DType) ([]observation, error) {
	module := c.Kind == "mamba1_module"
	var w reference.MambaWeights
	var in reference.MambaInput
	var err error
	load := func(dst *tensor.Tensor, name string, axes ...string) {
		if err == nil {
			*dst, err = c.input(prec, name, axes...)
		}
	}
	seqAx := func(last string) []string { return []string{"batch", "seq", last} }
	if module {
		load(&in.Hidden, "hidden_states", seqAx("d_model")...)
		load(&w.InProj, "in_proj_weight", "2*d_inner(x then z)", "d_model")
		load(&w.ConvWeight, "conv1d_weight", "d_inner", "d_conv")
		load(&w.XProj, "x_proj_weight", "dt_rank+2*d_state(dt,B,C)", "d_inner")
		load(&w.DtProj, "dt_proj_weight", "d_inner", "dt_rank")
		load(&w.DtBias, "dt_proj_bias", "d_inner")
		load(&w.OutProj, "out_proj_weight", "d_model", "d_inner")
		if err == nil {
			w.ConvBias, err = c.optionalInput(prec, "conv1d_bias", "d_inner")
		}
	} else {
		load(&in.X, "x", seqAx("d_inner")...)
		load(&in.Z, "z", seqAx("d_inner")...)
		load(&in.Dt, "dt", seqAx("d_inner")...)
		load(&in.B, "B", seqAx("d_state")...)
		load(&in.C, "C", seqAx("d_state")...)
		load(&w.ConvWeight, "conv_weight", "d_inner", "d_conv")
		load(&w.DtBias, "dt_bias", "d_inner")
		if err == nil {
			w.ConvBias, err = c.optionalInput(prec, "conv_bias", "d_inner")
		}
	}
	load(&w.ALog, "A_log", "d_inner", "d_state")
	load(&w.D, "D", "d_inner")
	if err != nil {
		return nil, err
	}
	m, err := reference.NewMamba(w)
	if err != nil {
		return nil, c.errorf("%v", err)
	}
	src := in.X
	if module {
		src = in.Hidden
	}
	rows, t := src.Dim(0), src.Dim(1)
	splits, err := c.splits(t)
	if err != nil {
		return nil, err
	}
	i, k, n := w.ConvWeight.Dim(0), w.ConvWeight.Dim(1), w.ALog.Dim(1)
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 1, BatchSize: rows, IntermediateSize: i, SSMStateSize: n, ConvKernelSize: k})
	if err != nil {
		return nil, c.errorf("mamba cache: %v", err)
	}
	slice := func(s, n int) reference.MambaInput {
		if module {
			return reference.MambaInput{Hidden: sliceTokens(in.Hidden, s, n)}
		}
		return reference.MambaInput{X: sliceTokens(in.X, s, n), Z: sliceTokens(in.Z, s, n), Dt: sliceTokens(in.Dt, s, n),
			B: sliceTokens(in.B, s, n), C: sliceTokens(in.C, s, n)}
	}
	axes := recurrentAxes{out: seqAx("d_inner"), outName: "y", convOut: seqAx("d_inner"),
		convState: []string{"batch", "d_inner", "d_conv"}, ssmState: []string{"batch", "d_inner", "d_state"}}
	if module {
		axes.out, axes.outName = seqAx("d_model"), "out"
	}
	return recurrentRun[mamba.View]{c: c, rows: rows, t: t, axes: axes,
		full:    func() (reference.MixerOutput, error) { return m.Forward(in, prec) },
		newView: func() (mamba.View, error) { one := 0; return mamba.NewView(meta, prec, &one) },
		prefill: func(n int, v mamba.View) (reference.MixerOutput, mamba.View, error) { return m.Prefill(slice(0, n), v) },
		step:    func(s int, v mamba.View) (reference.MixerOutput, mamba.View, error) { return m.Step(slice(s, 1), v) },
		states:  func(v mamba.View) (tensor.Tensor, tensor.Tensor) { return v.ConvStates(), v.SSMStates() },
	}.observe(splits)
}

func runMamba2(c *caseFile, prec tensor.DType) ([]observation, error) {
	module := c.Kind == "mamba2_module"
	var w reference.Mamba2Weights
	var in reference.Mamba2Input
	var err error
	for _, f := range []struct {
		dst *int
		key string
	}{{&w.Heads, "n_heads"}, {&w.HeadDim, "head_dim"}, {&w.Groups, "n_groups"}, {&w.StateSize, "d_state"}} {
		if *f.dst, err = c.configInt(f.key); err != nil {
			return nil, err
		}
	}
	load := func(dst *tensor.Tensor, name string, axes ...string) {
		if err == nil {
			*dst, err = c.input(prec, name, axes...)
		}
	}
	seqAx := func(last string) []string { return []string{"batch", "seq", last} }
	convName, biasName := "conv_weight", "conv_bias"
	if module {
		convName, biasName = "conv1d_weight", "conv1d_bias"
		for key, wantVal := range map[string]bool{"rmsnorm": true, "norm_before_gate": false, "D_has_hdim": false} {
			if raw, ok := c.Config[key]; ok && string(raw) != map[bool]string{true: "true", false: "false"}[wantVal] {
				return nil, c.errorf("config.%s is %s; only %v is supported", key, raw, wantVal)
			}
		}
		if w.NormEps, err = c.configFloat("norm_eps", 1e-5); err != nil {
			return nil, err
		}
		load(&in.Hidden, "hidden_states", seqAx("d_model")...)
		load(&w.InProj, "in_proj_weight", "d_in_proj(z|x|B|C|dt)", "d_model")
		load(&w.NormWeight, "norm_weight", "d_inner")
		load(&w.OutProj, "out_proj_weight", "d_model", "d_inner")
	} else {
		load(&in.XBC, "xBC", seqAx("conv_dim(x|B(g,n)|C(g,n))")...)
		load(&in.Z, "z", seqAx("d_inner(h,p)")...)
		load(&in.Dt, "dt", seqAx("n_heads")...)
	}
	load(&w.ConvWeight, convName, "conv_dim", "d_conv")
	load(&w.DtBias, "dt_bias", "n_heads")
	load(&w.ALog, "A_log", "n_heads")
	load(&w.D, "D", "n_heads")
	if err == nil {
		w.ConvBias, err = c.optionalInput(prec, biasName, "conv_dim")
	}
	if err != nil {
		return nil, err
	}
	m, err := reference.NewMamba2(w)
	if err != nil {
		return nil, c.errorf("%v", err)
	}
	src := in.XBC
	if module {
		src = in.Hidden
	}
	rows, t := src.Dim(0), src.Dim(1)
	splits, err := c.splits(t)
	if err != nil {
		return nil, err
	}
	meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 1, BatchSize: rows, IntermediateSize: w.Heads * w.HeadDim,
		NumHeads: w.Heads, HeadDim: w.HeadDim, StateSize: w.StateSize, ConvKernelSize: w.ConvWeight.Dim(1), NGroups: w.Groups})
	if err != nil {
		return nil, c.errorf("mamba2 cache: %v", err)
	}
	slice := func(s, n int) reference.Mamba2Input {
		if module {
			return reference.Mamba2Input{Hidden: sliceTokens(in.Hidden, s, n)}
		}
		return reference.Mamba2Input{XBC: sliceTokens(in.XBC, s, n), Z: sliceTokens(in.Z, s, n), Dt: sliceTokens(in.Dt, s, n)}
	}
	axes := recurrentAxes{out: seqAx("d_inner(h,p)"), outName: "y", convOut: seqAx("conv_dim"),
		convState: []string{"batch", "conv_dim", "d_conv"}, ssmState: []string{"batch", "n_heads", "head_dim", "d_state"}}
	if module {
		axes.out, axes.outName = seqAx("d_model"), "out"
	}
	// Each forward call that uses the cache ends with update_seq(1), as
	// EasyDeL's model does.
	advance := func(o reference.MixerOutput, v mamba2.View, err error) (reference.MixerOutput, mamba2.View, error) {
		if err != nil {
			return o, v, err
		}
		v, err = v.UpdateSeq(1)
		return o, v, err
	}
	return recurrentRun[mamba2.View]{c: c, rows: rows, t: t, axes: axes,
		full:    func() (reference.MixerOutput, error) { return m.Forward(in, prec) },
		newView: func() (mamba2.View, error) { one := 0; return mamba2.NewView(meta, prec, &one) },
		prefill: func(n int, v mamba2.View) (reference.MixerOutput, mamba2.View, error) {
			return advance(m.Prefill(slice(0, n), v))
		},
		step: func(s int, v mamba2.View) (reference.MixerOutput, mamba2.View, error) {
			return advance(m.Step(slice(s, 1), v))
		},
		states: func(v mamba2.View) (tensor.Tensor, tensor.Tensor) { return v.ConvStates(), v.SSMStates() },
	}.observe(splits)
}
