package reference_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// f64 is a float64 tensor of the given values and shape.
func f64(data []float64, shape ...int) tensor.Tensor {
	return tensor.Must(tensor.FromFloat64s(tensor.Float64, data, shape...))
}

// zeros is a float64 tensor of zeros.
func zeros(shape ...int) tensor.Tensor { return tensor.Must(tensor.New(tensor.Float64, shape...)) }

// Scalar functions of the recurrences, written out for the hand-worked values.
func silu(x float64) float64     { return x / (1 + math.Exp(-x)) }
func sigmoid(x float64) float64  { return 1 / (1 + math.Exp(-x)) }
func softplus(x float64) float64 { return math.Log(1 + math.Exp(x)) }

func mambaInnerWeights() reference.MambaWeights { // I = 3, K = 2, N = 2
	return reference.MambaWeights{ConvWeight: zeros(3, 2), DtBias: zeros(3), ALog: zeros(3, 2), D: zeros(3)}
}

func mambaModuleWeights() reference.MambaWeights { // d_model 4, I 3, K 2, N 2, R 1
	w := mambaInnerWeights()
	w.InProj, w.XProj, w.DtProj, w.OutProj = zeros(6, 4), zeros(5, 3), zeros(3, 1), zeros(4, 3)
	return w
}

// NewMamba names the tensor whose shape does not fit and the shape it wanted.
func TestNewMambaShapeErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(w *reference.MambaWeights)
		inner bool
		msg   string
	}{
		{"D too long", func(w *reference.MambaWeights) { w.D = zeros(4) }, true, "D has shape [4], want [3]"},
		{"dt_bias missing", func(w *reference.MambaWeights) { w.DtBias = tensor.Tensor{} }, true, "dt_bias is missing (want shape [3])"},
		{"A_log rows", func(w *reference.MambaWeights) { w.ALog = zeros(4, 2) }, true, "A_log has shape [4 2], want [3 2]"},
		{"A_log rank", func(w *reference.MambaWeights) { w.ALog = zeros(3) }, true, "A_log [3]"},
		{"conv bias", func(w *reference.MambaWeights) { w.ConvBias = zeros(2) }, true, "conv bias has shape [2], want [3]"},
		{"in_proj rows", func(w *reference.MambaWeights) { w.InProj = zeros(5, 4) }, false, "in_proj has shape [5 4], want [6 4]"},
		{"x_proj columns", func(w *reference.MambaWeights) { w.XProj = zeros(5, 2) }, false, "x_proj has shape [5 2], want [5 3]"},
		{"dt_proj rank", func(w *reference.MambaWeights) { w.DtProj = zeros(3) }, false, "dt_proj [3]"},
		{"out_proj missing", func(w *reference.MambaWeights) { w.OutProj = tensor.Tensor{} }, false, "out_proj is missing (want shape [4 3])"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := mambaModuleWeights()
			if tc.inner {
				w = mambaInnerWeights()
			}
			_, err := reference.NewMamba(w) // the unedited weights are fine
			require.NoError(t, err)
			tc.edit(&w)
			_, err = reference.NewMamba(w)
			require.ErrorIs(t, err, reference.ErrInput)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func mamba2Weights(module bool) reference.Mamba2Weights { // H 2, P 2, G 1, N 2: I 4, conv 8, K 3
	w := reference.Mamba2Weights{Heads: 2, HeadDim: 2, Groups: 1, StateSize: 2,
		ConvWeight: zeros(8, 3), DtBias: zeros(2), ALog: zeros(2), D: zeros(2)}
	if module { // d_model 3; in_proj rows z (4) + xBC (8) + dt (2)
		w.InProj, w.NormWeight, w.OutProj = zeros(14, 3), zeros(4), zeros(3, 4)
	}
	return w
}

func TestNewMamba2ShapeErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(w *reference.Mamba2Weights)
		module bool
		msg    string
	}{
		{"groups do not divide heads", func(w *reference.Mamba2Weights) { w.Groups = 3 }, false, "groups 3"},
		{"no heads", func(w *reference.Mamba2Weights) { w.Heads = 0 }, false, "heads 0"},
		{"conv channels", func(w *reference.Mamba2Weights) { w.ConvWeight = zeros(7, 3) }, false, "conv weight has shape [7 3], want [8 3]"},
		{"A_log", func(w *reference.Mamba2Weights) { w.ALog = zeros(3) }, false, "A_log has shape [3], want [2]"},
		{"D missing", func(w *reference.Mamba2Weights) { w.D = tensor.Tensor{} }, false, "D is missing (want shape [2])"},
		{"dt_bias", func(w *reference.Mamba2Weights) { w.DtBias = zeros(2, 1) }, false, "dt_bias has shape [2 1], want [2]"},
		{"conv bias", func(w *reference.Mamba2Weights) { w.ConvBias = zeros(7) }, false, "conv bias has shape [7], want [8]"},
		{"in_proj rows", func(w *reference.Mamba2Weights) { w.InProj = zeros(13, 3) }, true, "in_proj has shape [13 3], want [14 3]"},
		{"norm weight", func(w *reference.Mamba2Weights) { w.NormWeight = zeros(3) }, true, "norm weight has shape [3], want [4]"},
		{"out_proj", func(w *reference.Mamba2Weights) { w.OutProj = zeros(4, 3) }, true, "out_proj has shape [4 3], want [3 4]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := mamba2Weights(tc.module)
			_, err := reference.NewMamba2(w)
			require.NoError(t, err)
			tc.edit(&w)
			_, err = reference.NewMamba2(w)
			require.ErrorIs(t, err, reference.ErrInput)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func lightningWeights() reference.LightningWeights { // H 2, Dh 2, hidden 3
	return reference.LightningWeights{Heads: 2, HeadDim: 2, LayerIdx: 0, NumLayers: 2,
		QKVProj: zeros(12, 3), OutputGate: zeros(4, 3), OutProj: zeros(3, 4), NormWeight: zeros(4)}
}

func TestNewLightningErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(w *reference.LightningWeights)
		msg  string
	}{
		{"qkv_proj rows", func(w *reference.LightningWeights) { w.QKVProj = zeros(11, 3) }, "qkv_proj has shape [11 3], want [12 3]"},
		{"output_gate columns", func(w *reference.LightningWeights) { w.OutputGate = zeros(4, 2) }, "output_gate has shape [4 2], want [4 3]"},
		{"out_proj transposed", func(w *reference.LightningWeights) { w.OutProj = zeros(4, 3) }, "out_proj has shape [4 3], want [3 4]"},
		{"norm weight missing", func(w *reference.LightningWeights) { w.NormWeight = tensor.Tensor{} }, "norm weight is missing (want shape [4])"},
		{"no heads", func(w *reference.LightningWeights) { w.Heads = 0 }, "heads 0"},
		{"negative block size", func(w *reference.LightningWeights) { w.BlockSize = -1 }, "block size -1"},
		{"layer past the last", func(w *reference.LightningWeights) { w.LayerIdx = 2 }, "layer 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := lightningWeights()
			_, err := reference.NewLightning(w)
			require.NoError(t, err)
			tc.edit(&w)
			_, err = reference.NewLightning(w)
			require.ErrorIs(t, err, reference.ErrInput)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func mambaView(t *testing.T, dtype tensor.DType, rows, i, n, k int) mamba.View {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: 1, BatchSize: rows, IntermediateSize: i, SSMStateSize: n, ConvKernelSize: k})
	require.NoError(t, err)
	layer := 0
	v, err := mamba.NewView(meta, dtype, &layer)
	require.NoError(t, err)
	return v
}

func mamba2View(t *testing.T, dtype tensor.DType, w reference.Mamba2Weights) mamba2.View {
	meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 1, BatchSize: 1, IntermediateSize: w.Heads * w.HeadDim,
		NumHeads: w.Heads, HeadDim: w.HeadDim, StateSize: w.StateSize, ConvKernelSize: w.ConvWeight.Dim(1), NGroups: w.Groups})
	require.NoError(t, err)
	layer := 0
	v, err := mamba2.NewView(meta, dtype, &layer)
	require.NoError(t, err)
	return v
}

func lightningView(t *testing.T, dtype tensor.DType, rows, heads, dh int) lightning.View {
	meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(rows), NumHeads: lightning.Ptr(heads), HeadDim: lightning.Ptr(dh)})
	require.NoError(t, err)
	v, err := lightning.NewView(meta, dtype, lightning.Ptr(0))
	require.NoError(t, err)
	return v
}

// A step is one token per row: two tokens are an error, and the view comes
// back unchanged.
func TestStepTakesOneToken(t *testing.T) {
	const msg = "a step takes 1 token per row, got 2"
	t.Run("mamba", func(t *testing.T) {
		m, err := reference.NewMamba(mambaInnerWeights())
		require.NoError(t, err)
		v := mambaView(t, tensor.Float64, 1, 3, 2, 2)
		in := reference.MambaInput{X: zeros(1, 2, 3), Z: zeros(1, 2, 3), Dt: zeros(1, 2, 3), B: zeros(1, 2, 2), C: zeros(1, 2, 2)}
		_, next, err := m.Step(in, v)
		require.ErrorIs(t, err, reference.ErrInput)
		assert.Contains(t, err.Error(), msg)
		assert.Equal(t, v.ConvStates().Float64s(), next.ConvStates().Float64s())
	})
	t.Run("mamba2", func(t *testing.T) {
		w := mamba2Weights(false)
		m, err := reference.NewMamba2(w)
		require.NoError(t, err)
		v := mamba2View(t, tensor.Float64, w)
		_, next, err := m.Step(reference.Mamba2Input{XBC: zeros(1, 2, 8), Z: zeros(1, 2, 4), Dt: zeros(1, 2, 2)}, v)
		require.ErrorIs(t, err, reference.ErrInput)
		assert.Contains(t, err.Error(), msg)
		assert.Equal(t, v.ConvStates().Float64s(), next.ConvStates().Float64s())
	})
	t.Run("lightning", func(t *testing.T) {
		l, err := reference.NewLightning(lightningWeights())
		require.NoError(t, err)
		v := lightningView(t, tensor.Float64, 1, 2, 2)
		_, next, err := l.Step(zeros(1, 2, 3), v)
		require.ErrorIs(t, err, reference.ErrInput)
		assert.Contains(t, err.Error(), msg)
		assert.True(t, next.KeyValue().IsZero(), "the state must stay absent")
	})
}

// The cached paths run in the cache's dtype: a bfloat16 cache is an error
// naming the precision, and so is a bfloat16 Forward.
func TestCachedPathRejectsBFloat16(t *testing.T) {
	const msg = "precision bfloat16"
	m, err := reference.NewMamba(mambaInnerWeights())
	require.NoError(t, err)
	mv := mambaView(t, tensor.BFloat16, 1, 3, 2, 2)
	one := reference.MambaInput{X: zeros(1, 1, 3), Z: zeros(1, 1, 3), Dt: zeros(1, 1, 3), B: zeros(1, 1, 2), C: zeros(1, 1, 2)}
	w2 := mamba2Weights(false)
	m2, err := reference.NewMamba2(w2)
	require.NoError(t, err)
	m2v := mamba2View(t, tensor.BFloat16, w2)
	one2 := reference.Mamba2Input{XBC: zeros(1, 1, 8), Z: zeros(1, 1, 4), Dt: zeros(1, 1, 2)}
	l, err := reference.NewLightning(lightningWeights())
	require.NoError(t, err)
	lv := lightningView(t, tensor.BFloat16, 1, 2, 2)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"mamba step", func() error { _, _, err := m.Step(one, mv); return err }},
		{"mamba prefill", func() error { _, _, err := m.Prefill(one, mv); return err }},
		{"mamba forward", func() error { _, err := m.Forward(one, tensor.BFloat16); return err }},
		{"mamba2 step", func() error { _, _, err := m2.Step(one2, m2v); return err }},
		{"mamba2 prefill", func() error { _, _, err := m2.Prefill(one2, m2v); return err }},
		{"mamba2 forward", func() error { _, err := m2.Forward(one2, tensor.BFloat16); return err }},
		{"lightning step", func() error { _, _, err := l.Step(zeros(1, 1, 3), lv); return err }},
		{"lightning prefill", func() error { _, _, err := l.Prefill(zeros(1, 1, 3), lv); return err }},
		{"lightning forward", func() error { _, err := l.Forward(zeros(1, 1, 3), tensor.BFloat16); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.ErrorIs(t, err, reference.ErrInput)
			assert.Contains(t, err.Error(), msg)
		})
	}
}

// tokens returns token s of a (1, T, n) tensor as a (1, 1, n) tensor.
func tokens(x tensor.Tensor, s, n int) tensor.Tensor {
	all := x.Float64s()
	per := x.Dim(2)
	return f64(all[s*per:(s+n)*per], 1, n, per)
}

// Mamba inner form, one channel, one state, a conv of width 2, two tokens.
// dt + dt_bias = 0 gives dt = softplus(0) = ln 2, and A_log = 0 gives
// A = -1, so the state decays by exp(-ln 2) = 1/2 per token.
func TestMambaByHand(t *testing.T) {
	w := reference.MambaWeights{ConvWeight: f64([]float64{0.5, 1}, 1, 2), ConvBias: f64([]float64{-0.5}, 1),
		DtBias: f64([]float64{-0.25}, 1), ALog: f64([]float64{0}, 1, 1), D: f64([]float64{2}, 1)}
	in := reference.MambaInput{X: f64([]float64{1, 2}, 1, 2, 1), Z: f64([]float64{0.5, -1}, 1, 2, 1),
		Dt: f64([]float64{0.25, 0.25}, 1, 2, 1), B: f64([]float64{2, 4}, 1, 2, 1), C: f64([]float64{3, -1}, 1, 2, 1)}
	c0 := silu(1*1 - 0.5)         // conv window [0, 1]
	c1 := silu(0.5*1 + 1*2 - 0.5) // conv window [1, 2]
	h0 := math.Ln2 * c0 * 2
	h1 := 0.5*h0 + math.Ln2*c1*4
	y := []float64{(h0*3 + 2*c0) * silu(0.5), (h1*(-1) + 2*c1) * silu(-1)}

	m, err := reference.NewMamba(w)
	require.NoError(t, err)
	full, err := m.Forward(in, tensor.Float64)
	require.NoError(t, err)
	assert.InDeltaSlice(t, y, full.Out.Float64s(), 1e-15)
	assert.InDeltaSlice(t, []float64{c0, c1}, full.ConvOut.Float64s(), 1e-15)
	assert.Equal(t, []float64{1, 2}, full.ConvState.Float64s())
	assert.InDeltaSlice(t, []float64{h1}, full.SSMState.Float64s(), 1e-15)

	f32, err := m.Forward(in, tensor.Float32)
	require.NoError(t, err)
	assert.Equal(t, tensor.Float32, f32.Out.DType())
	assert.InDeltaSlice(t, y, f32.Out.Float64s(), 1e-6)

	slice := func(s, n int) reference.MambaInput {
		return reference.MambaInput{X: tokens(in.X, s, n), Z: tokens(in.Z, s, n), Dt: tokens(in.Dt, s, n), B: tokens(in.B, s, n), C: tokens(in.C, s, n)}
	}
	for _, prefill := range []int{0, 1, 2} { // tokens by prefill, the rest by steps
		v := mambaView(t, tensor.Float64, 1, 1, 1, 2)
		var got []float64
		if prefill > 0 {
			var o reference.MixerOutput
			o, v, err = m.Prefill(slice(0, prefill), v)
			require.NoError(t, err)
			got = o.Out.Float64s()
		}
		for s := prefill; s < 2; s++ {
			var o reference.MixerOutput
			o, v, err = m.Step(slice(s, 1), v)
			require.NoError(t, err)
			got = append(got, o.Out.Float64s()...)
		}
		assert.InDeltaSlice(t, y, got, 1e-15, "prefill %d", prefill)
		assert.InDeltaSlice(t, full.Out.Float64s(), got, 1e-15, "prefill %d", prefill)
		assert.Equal(t, []float64{1, 2}, v.ConvStates().Float64s(), "prefill %d", prefill)
		assert.InDeltaSlice(t, []float64{h1}, v.SSMStates().Float64s(), 1e-15, "prefill %d", prefill)
	}
}

// Mamba module form, d_model = d_inner = dt_rank = d_state = 1: in_proj
// gives x = h and z = h/2, x_proj gives dt_raw = c, B = 2c, C = -c.
func TestMambaModuleByHand(t *testing.T) {
	w := reference.MambaWeights{ConvWeight: f64([]float64{0.5, 1}, 1, 2), DtBias: f64([]float64{0.1}, 1),
		ALog: f64([]float64{0}, 1, 1), D: f64([]float64{1}, 1),
		InProj: f64([]float64{1, 0.5}, 2, 1), XProj: f64([]float64{1, 2, -1}, 3, 1), DtProj: f64([]float64{0.5}, 1, 1),
		OutProj: f64([]float64{3}, 1, 1)}
	hidden := f64([]float64{1, -2}, 1, 2, 1)
	c0, c1 := silu(1), silu(0.5*1+1*(-2))
	dt0, dt1 := softplus(0.5*c0+0.1), softplus(0.5*c1+0.1)
	h0 := dt0 * c0 * (2 * c0)
	h1 := math.Exp(-dt1)*h0 + dt1*c1*(2*c1)
	out := []float64{3 * (h0*(-c0) + c0) * silu(0.5), 3 * (h1*(-c1) + c1) * silu(-1)}

	m, err := reference.NewMamba(w)
	require.NoError(t, err)
	full, err := m.Forward(reference.MambaInput{Hidden: hidden}, tensor.Float64)
	require.NoError(t, err)
	assert.InDeltaSlice(t, out, full.Out.Float64s(), 1e-15)
	assert.InDeltaSlice(t, []float64{c0, c1}, full.ConvOut.Float64s(), 1e-15)

	v := mambaView(t, tensor.Float64, 1, 1, 1, 2)
	var got []float64
	for s := range 2 {
		var o reference.MixerOutput
		o, v, err = m.Step(reference.MambaInput{Hidden: tokens(hidden, s, 1)}, v)
		require.NoError(t, err)
		got = append(got, o.Out.Float64s()...)
	}
	assert.InDeltaSlice(t, out, got, 1e-15)
	assert.InDeltaSlice(t, []float64{h1}, v.SSMStates().Float64s(), 1e-15)
}

// Mamba2 inner form with two heads sharing one group (H 2, P 1, G 1, N 1,
// K 2): xBC = [x_head0, x_head1, B, C]. dt = softplus(0) = ln 2 for both
// heads; A_log 0 and ln 2 give A = -1 and -2, so the heads decay by 1/2
// and 1/4 per token.
func TestMamba2ByHand(t *testing.T) {
	w := reference.Mamba2Weights{Heads: 2, HeadDim: 1, Groups: 1, StateSize: 1,
		ConvWeight: f64([]float64{0.5, 1, 1, -1, 1, 1, -1, 2}, 4, 2),
		DtBias:     f64([]float64{0, 0}, 2), ALog: f64([]float64{0, math.Ln2}, 2), D: f64([]float64{2, -1}, 2)}
	in := reference.Mamba2Input{
		XBC: f64([]float64{1, 2, 2, -1, 0.5, 1, -1, 2}, 1, 2, 4),
		Z:   f64([]float64{0.5, 1, -1, 2}, 1, 2, 2),
		Dt:  f64([]float64{0, 0, 0, 0}, 1, 2, 2)}
	// Conv outputs: token 0 sees window [0, v0]; token 1 sees [v0, v1].
	x00, x10, b0, cc0 := silu(1*1), silu(-1*2), silu(1*2), silu(2*-1)
	x01, x11, b1, cc1 := silu(0.5*1+1*0.5), silu(1*2-1*1), silu(1*2+1*-1), silu(-1*-1+2*2)
	ln2 := math.Ln2
	s00, s10 := ln2*x00*b0, ln2*x10*b0
	s01, s11 := s00/2+ln2*x01*b1, s10/4+ln2*x11*b1
	y := []float64{
		(s00*cc0 + 2*x00) * silu(0.5), (s10*cc0 - x10) * silu(1),
		(s01*cc1 + 2*x01) * silu(-1), (s11*cc1 - x11) * silu(2)}

	m, err := reference.NewMamba2(w)
	require.NoError(t, err)
	full, err := m.Forward(in, tensor.Float64)
	require.NoError(t, err)
	assert.InDeltaSlice(t, y, full.Out.Float64s(), 1e-15)
	assert.InDeltaSlice(t, []float64{x00, x10, b0, cc0, x01, x11, b1, cc1}, full.ConvOut.Float64s(), 1e-15)
	assert.Equal(t, []float64{1, 0.5, 2, 1, 2, -1, -1, 2}, full.ConvState.Float64s()) // (channel, K)
	assert.InDeltaSlice(t, []float64{s01, s11}, full.SSMState.Float64s(), 1e-15)

	slice := func(s, n int) reference.Mamba2Input {
		return reference.Mamba2Input{XBC: tokens(in.XBC, s, n), Z: tokens(in.Z, s, n), Dt: tokens(in.Dt, s, n)}
	}
	for _, prefill := range []int{0, 1, 2} {
		v := mamba2View(t, tensor.Float64, w)
		var got []float64
		if prefill > 0 {
			var o reference.MixerOutput
			o, v, err = m.Prefill(slice(0, prefill), v)
			require.NoError(t, err)
			got = o.Out.Float64s()
		}
		for s := prefill; s < 2; s++ {
			var o reference.MixerOutput
			o, v, err = m.Step(slice(s, 1), v)
			require.NoError(t, err)
			got = append(got, o.Out.Float64s()...)
		}
		assert.InDeltaSlice(t, y, got, 1e-15, "prefill %d", prefill)
		assert.Equal(t, full.ConvState.Float64s(), v.ConvStates().Float64s(), "prefill %d", prefill)
		assert.InDeltaSlice(t, []float64{s01, s11}, v.SSMStates().Float64s(), 1e-15, "prefill %d", prefill)
	}
}

// The Mamba2 module form is the inner form on in_proj's z | xBC | dt,
// followed by an RMSNorm of each group of d_inner/G gated values and
// out_proj. With d_model 1 and hidden values 1 and 2, the inner inputs are
// in_proj's column and twice it.
func TestMamba2ModuleIsInnerPlusGatedNorm(t *testing.T) {
	w := reference.Mamba2Weights{Heads: 2, HeadDim: 2, Groups: 2, StateSize: 1, // I 4, conv 8, K 2
		ConvWeight: f64([]float64{0.5, 1, -1, 0.5, 1, 1, 0.25, -0.5, 1, 0.5, -0.5, 1, 1, -1, 0.5, 0.5}, 8, 2),
		DtBias:     f64([]float64{0.1, -0.2}, 2), ALog: f64([]float64{0.3, -0.4}, 2), D: f64([]float64{1, -0.5}, 2),
		NormEps: 1e-3}
	col := []float64{0.3, -0.6, 0.9, 0.2 /* z */, 1, -0.5, 0.7, 0.4, -0.8, 0.6, 0.3, -1.1 /* xBC */, 0.2, -0.3 /* dt */}
	inner, err := reference.NewMamba2(w)
	require.NoError(t, err)
	scaled := func(k float64, lo, hi int) []float64 {
		out := make([]float64, 0, hi-lo)
		for _, v := range col[lo:hi] {
			out = append(out, k*v)
		}
		return out
	}
	innerIn := reference.Mamba2Input{
		Z:   f64(append(scaled(1, 0, 4), scaled(2, 0, 4)...), 1, 2, 4),
		XBC: f64(append(scaled(1, 4, 12), scaled(2, 4, 12)...), 1, 2, 8),
		Dt:  f64(append(scaled(1, 12, 14), scaled(2, 12, 14)...), 1, 2, 2)}
	gated, err := inner.Forward(innerIn, tensor.Float64)
	require.NoError(t, err)

	w.InProj = f64(col, 14, 1)
	w.NormWeight = f64([]float64{1, 2, -1, 0.5}, 4)
	w.OutProj = f64([]float64{1, -1, 0.5, 2}, 1, 4)
	module, err := reference.NewMamba2(w)
	require.NoError(t, err)
	hidden := f64([]float64{1, 2}, 1, 2, 1)
	got, err := module.Forward(reference.Mamba2Input{Hidden: hidden}, tensor.Float64)
	require.NoError(t, err)

	g := gated.Out.Float64s()
	want := make([]float64, 2)
	for tok := range 2 {
		v := g[tok*4 : tok*4+4]
		r0 := math.Sqrt((v[0]*v[0]+v[1]*v[1])/2 + 1e-3) // group 0: values 0, 1
		r1 := math.Sqrt((v[2]*v[2]+v[3]*v[3])/2 + 1e-3) // group 1: values 2, 3
		want[tok] = 1*v[0]/r0*1 - 1*v[1]/r0*2 + 0.5*v[2]/r1*(-1) + 2*v[3]/r1*0.5
	}
	assert.InDeltaSlice(t, want, got.Out.Float64s(), 1e-14)
	assert.InDeltaSlice(t, gated.SSMState.Float64s(), got.SSMState.Float64s(), 1e-15)
	assert.InDeltaSlice(t, gated.ConvOut.Float64s(), got.ConvOut.Float64s(), 1e-15)

	v := mamba2View(t, tensor.Float64, w)
	var steps []float64
	for s := range 2 {
		var o reference.MixerOutput
		o, v, err = module.Step(reference.Mamba2Input{Hidden: tokens(hidden, s, 1)}, v)
		require.NoError(t, err)
		steps = append(steps, o.Out.Float64s()...)
	}
	assert.InDeltaSlice(t, want, steps, 1e-14)
}

// Lightning with two heads of dimension 1 and one hidden unit: qkv_proj
// rows are per head q | k | v; the state is a scalar per head,
// kv = exp(-s_h)·kv + k·v, and core = q·kv.
func TestLightningByHand(t *testing.T) {
	base := reference.LightningWeights{Heads: 2, HeadDim: 1, LayerIdx: 0, NumLayers: 2,
		QKVProj:    f64([]float64{1, 0.5, 2, -1, 1, 0.5}, 6, 1),
		OutputGate: f64([]float64{1, -1}, 2, 1),
		OutProj:    f64([]float64{0.5, 1}, 1, 2),
		NormWeight: f64([]float64{2, 1}, 2)}
	hs := []float64{1, -1, 2}
	hidden := f64(hs, 1, 3, 1)
	// s_h = (2^(-8/H))^(h+1) · (1 - 0/(2-1+1e-5) + 1e-5) with H = 2.
	factor := 1 + 1e-5
	slopes := []float64{factor / 16, factor / 256}
	qkv := [][3]float64{{1, 0.5, 2}, {-1, 1, 0.5}} // per head: q, k, v weights
	var core, out, kvTraj []float64
	kv := [2]float64{}
	for _, h := range hs {
		var o [2]float64
		for hh := range 2 {
			kv[hh] = math.Exp(-slopes[hh])*kv[hh] + silu(qkv[hh][1]*h)*silu(qkv[hh][2]*h)
			o[hh] = silu(qkv[hh][0]*h) * kv[hh]
		}
		core = append(core, o[0], o[1])
		kvTraj = append(kvTraj, kv[0], kv[1])
		r := math.Sqrt((o[0]*o[0]+o[1]*o[1])/2 + 1e-6)
		out = append(out, 0.5*sigmoid(h)*(o[0]/r*2)+1*sigmoid(-h)*(o[1]/r*1))
	}

	for _, block := range []int{0, 1, 2, 3, 5} { // 0 is the default, 256
		w := base
		w.BlockSize = block
		l, err := reference.NewLightning(w)
		require.NoError(t, err)
		assert.InDeltaSlice(t, slopes, l.SlopeRates(), 1e-17)
		full, err := l.Forward(hidden, tensor.Float64)
		require.NoError(t, err)
		assert.InDeltaSlice(t, core, full.Core.Float64s(), 1e-15, "block %d", block)
		assert.InDeltaSlice(t, out, full.Out.Float64s(), 1e-15, "block %d", block)
		assert.InDeltaSlice(t, kvTraj[4:], full.KV.Float64s(), 1e-15, "block %d", block)
		// q (B, H, T, Dh): head 0 then head 1, each over the tokens.
		assert.InDeltaSlice(t, []float64{silu(1), silu(-1), silu(2), silu(-1), silu(1), silu(-2)}, full.Q.Float64s(), 1e-15)
	}

	l, err := reference.NewLightning(base)
	require.NoError(t, err)
	for _, prefill := range []int{0, 1, 2, 3} {
		v := lightningView(t, tensor.Float64, 1, 2, 1)
		var gotOut, gotCore []float64
		if prefill > 0 {
			var o reference.LightningOutput
			o, v, err = l.Prefill(tokens(hidden, 0, prefill), v)
			require.NoError(t, err)
			gotOut, gotCore = o.Out.Float64s(), o.Core.Float64s()
			assert.InDeltaSlice(t, kvTraj[2*(prefill-1):2*prefill], v.KeyValue().Float64s(), 1e-15)
		}
		for s := prefill; s < 3; s++ {
			var o reference.LightningOutput
			o, v, err = l.Step(tokens(hidden, s, 1), v)
			require.NoError(t, err)
			gotOut, gotCore = append(gotOut, o.Out.Float64s()...), append(gotCore, o.Core.Float64s()...)
			assert.InDeltaSlice(t, kvTraj[2*s:2*s+2], v.KeyValue().Float64s(), 1e-15, "after token %d", s)
		}
		assert.InDeltaSlice(t, out, gotOut, 1e-15, "prefill %d", prefill)
		assert.InDeltaSlice(t, core, gotCore, 1e-15, "prefill %d", prefill)
	}
}
