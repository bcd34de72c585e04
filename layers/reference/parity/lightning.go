package parity

import (
	"encoding/json"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func runLightning(c *caseFile, prec tensor.DType) ([]observation, error) {
	var w reference.LightningWeights
	var err error
	for _, f := range []struct {
		dst *int
		key string
	}{{&w.Heads, "num_attention_heads"}, {&w.HeadDim, "head_dim"}, {&w.LayerIdx, "layer_idx"}, {&w.NumLayers, "num_hidden_layers"}} {
		if *f.dst, err = c.configInt(f.key); err != nil {
			return nil, err
		}
	}
	if _, ok := c.Config["block_size"]; ok {
		if w.BlockSize, err = c.configInt("block_size"); err != nil {
			return nil, err
		}
	}
	if w.NormEps, err = c.configFloat("rms_norm_eps", 1e-6); err != nil {
		return nil, err
	}
	if raw, ok := c.Config["hidden_act"]; ok {
		var act string
		if json.Unmarshal(raw, &act) != nil || act != "silu" {
			return nil, c.errorf("config.hidden_act is %s; only \"silu\" is supported", raw)
		}
	}
	var hidden tensor.Tensor
	load := func(dst *tensor.Tensor, name string, axes ...string) {
		if err == nil {
			*dst, err = c.input(prec, name, axes...)
		}
	}
	load(&hidden, "hidden_states", "batch", "seq", "hidden")
	load(&w.QKVProj, "qkv_proj_weight", "heads*3*head_dim(per head: q|k|v)", "hidden")
	load(&w.OutputGate, "output_gate_weight", "heads*head_dim", "hidden")
	load(&w.OutProj, "out_proj_weight", "hidden", "heads*head_dim")
	load(&w.NormWeight, "norm_weight", "heads*head_dim")
	if err != nil {
		return nil, err
	}
	l, err := reference.NewLightning(w)
	if err != nil {
		return nil, c.errorf("%v", err)
	}
	rows, t := hidden.Dim(0), hidden.Dim(1)
	splits, err := c.splits(t)
	if err != nil {
		return nil, err
	}
	full, err := l.Forward(hidden, prec)
	if err != nil {
		return nil, err
	}
	seqAx := func(last string) []string { return []string{"batch", "seq", last} }
	qkvAx := []string{"batch", "heads", "seq", "head_dim"}
	kvAx := []string{"batch", "heads", "head_dim(k)", "head_dim(v)"}
	obs := []observation{
		{check: "slope_rate", ref: "slope_rate", axes: []string{"heads"}, got: l.SlopeRates()},
		{check: "full/q", ref: "q", axes: qkvAx, got: full.Q.Float64s()},
		{check: "full/k", ref: "k", axes: qkvAx, got: full.K.Float64s()},
		{check: "full/v", ref: "v", axes: qkvAx, got: full.V.Float64s()},
		{check: "full/core", ref: "core_full", axes: seqAx("heads*head_dim"), got: full.Core.Float64s()},
		{check: "full/out", ref: "out_full", axes: seqAx("hidden"), got: full.Out.Float64s()},
		{check: "full/kv_state", ref: "kv_state_final", axes: kvAx, got: full.KV.Float64s()},
	}
	meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(rows), NumHeads: lightning.Ptr(w.Heads), HeadDim: lightning.Ptr(w.HeadDim)})
	if err != nil {
		return nil, c.errorf("lightning cache: %v", err)
	}
	hd := w.Heads * w.HeadDim
	for _, s := range schedules(t, splits) {
		v, err := lightning.NewView(meta, prec, lightning.Ptr(0))
		if err != nil {
			return nil, err
		}
		outs, cores := newTokenSeq(rows, t, full.Out.Len()/(rows*t)), newTokenSeq(rows, t, hd)
		var after []int
		var traj []float64
		pos := 0
		for i, n := range s.chunks {
			var o reference.LightningOutput
			if s.name != "step" && i == 0 {
				o, v, err = l.Prefill(sliceTokens(hidden, 0, n), v)
			} else {
				o, v, err = l.Step(sliceTokens(hidden, pos, 1), v)
			}
			if err != nil {
				return nil, err
			}
			outs.put(pos, o.Out)
			cores.put(pos, o.Core)
			pos += n
			after = append(after, pos-1)
			traj = append(traj, v.KeyValue().Float64s()...)
		}
		obs = append(obs,
			observation{check: s.name + "/out", ref: "out_step", axes: seqAx("hidden"), got: outs.data},
			observation{check: s.name + "/core", ref: "core_step", axes: seqAx("heads*head_dim"), got: cores.data},
			observation{check: s.name + "/kv_state_traj", ref: "kv_state_traj", axes: append([]string{"after_token"}, kvAx...), rows: after, got: traj})
	}
	return obs, nil
}
