package reference

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// LayerKind is the mixer of one layer of a Hybrid model.
type LayerKind string

// The layer kinds of a Hybrid model.
const (
	// LayerAttention is grouped-query softmax attention with rotary
	// positions, over the paged KV cache.
	LayerAttention LayerKind = "attention"
	// LayerMamba2 is a Mamba2 module (Mamba2 in its module form) over the
	// Mamba2 conv and SSM state cache.
	LayerMamba2 LayerKind = "mamba2"
	// LayerLightning is MiniMax lightning (linear) attention over the
	// lightning key_value state cache.
	LayerLightning LayerKind = "lightning"
)

// ParseLayerPattern reads a comma-separated layer pattern such as
// "attention,mamba2,lightning,attention". Each entry is a kind's name or its
// first letter (a, m, l); spaces around entries are ignored.
func ParseLayerPattern(s string) ([]LayerKind, error) {
	var out []LayerKind
	for _, f := range strings.Split(s, ",") {
		switch strings.ToLower(strings.TrimSpace(f)) {
		case "attention", "attn", "a":
			out = append(out, LayerAttention)
		case "mamba2", "m":
			out = append(out, LayerMamba2)
		case "lightning", "l":
			out = append(out, LayerLightning)
		default:
			return nil, fmt.Errorf("%w: layer %q in pattern %q (want attention, mamba2 or lightning, or a, m, l)", ErrInput, strings.TrimSpace(f), s)
		}
	}
	return out, nil
}

// FormatLayerPattern is the inverse of ParseLayerPattern: the kinds' names
// joined by commas.
func FormatLayerPattern(kinds []LayerKind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// HybridConfig sizes a Hybrid model. Every size must be positive; the
// sizes of a kind that the pattern does not use are still checked, so a
// config stays valid when its pattern changes.
type HybridConfig struct {
	// Seed seeds the weights (math/rand/v2's PCG with streams Seed and
	// Seed^hybridStream): the same seed gives the same weights everywhere.
	Seed uint64 `json:"seed"`
	// Vocab is the number of token ids, 0..Vocab-1.
	Vocab int `json:"vocab"`
	// Hidden is the model width d_model.
	Hidden int `json:"hidden"`
	// Layers is the layer pattern, first layer first.
	Layers []LayerKind `json:"layers"`

	// Heads, KVHeads and HeadDim size attention (Heads a multiple of
	// KVHeads; HeadDim even, for the rotary embedding).
	Heads   int `json:"heads"`
	KVHeads int `json:"kv_heads"`
	HeadDim int `json:"head_dim"`
	// RopeTheta is the rotary embedding's base; 0 means 10000.
	RopeTheta float64 `json:"rope_theta"`

	// Mamba2Heads, Mamba2HeadDim, Mamba2Groups (dividing the heads),
	// Mamba2State (N) and Mamba2Conv (the conv width K) size Mamba2.
	Mamba2Heads   int `json:"mamba2_heads"`
	Mamba2HeadDim int `json:"mamba2_head_dim"`
	Mamba2Groups  int `json:"mamba2_groups"`
	Mamba2State   int `json:"mamba2_state"`
	Mamba2Conv    int `json:"mamba2_conv"`

	// LightningHeads and LightningHeadDim size lightning attention;
	// LightningBlock is the block length of its full (block-wise) path.
	LightningHeads   int `json:"lightning_heads"`
	LightningHeadDim int `json:"lightning_head_dim"`
	LightningBlock   int `json:"lightning_block"`
}

// hybridStream is the second PCG stream word of the weights' generator.
const hybridStream = 0x6b766d657368 // "kvmesh"

// DefaultHybridConfig returns the tiny model `kvmesh run` serves by default:
// 4 layers (attention, mamba2, lightning, attention), width 32, a vocabulary
// of 256.
func DefaultHybridConfig() HybridConfig {
	return HybridConfig{
		Seed: 1, Vocab: 256, Hidden: 32,
		Layers: []LayerKind{LayerAttention, LayerMamba2, LayerLightning, LayerAttention},
		Heads:  4, KVHeads: 2, HeadDim: 8,
		Mamba2Heads: 4, Mamba2HeadDim: 8, Mamba2Groups: 1, Mamba2State: 8, Mamba2Conv: 4,
		LightningHeads: 4, LightningHeadDim: 8, LightningBlock: 16,
	}
}

// Validate checks that every size is positive and that the sizes fit each
// other, naming the first one that does not.
func (c HybridConfig) Validate() error {
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab", c.Vocab}, {"hidden", c.Hidden}, {"heads", c.Heads}, {"kv_heads", c.KVHeads}, {"head_dim", c.HeadDim},
		{"mamba2_heads", c.Mamba2Heads}, {"mamba2_head_dim", c.Mamba2HeadDim}, {"mamba2_groups", c.Mamba2Groups},
		{"mamba2_state", c.Mamba2State}, {"mamba2_conv", c.Mamba2Conv},
		{"lightning_heads", c.LightningHeads}, {"lightning_head_dim", c.LightningHeadDim}, {"lightning_block", c.LightningBlock}} {
		if f.v <= 0 {
			return fmt.Errorf("%w: model %s is %d, want a positive number", ErrInput, f.name, f.v)
		}
	}
	switch {
	case len(c.Layers) == 0:
		return fmt.Errorf("%w: the model has no layers", ErrInput)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: model heads %d are not a multiple of kv_heads %d", ErrInput, c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("%w: model head_dim %d is odd (the rotary embedding rotates pairs)", ErrInput, c.HeadDim)
	case c.Mamba2Heads%c.Mamba2Groups != 0:
		return fmt.Errorf("%w: model mamba2_heads %d are not a multiple of mamba2_groups %d", ErrInput, c.Mamba2Heads, c.Mamba2Groups)
	case c.RopeTheta < 0 || math.IsNaN(c.RopeTheta) || math.IsInf(c.RopeTheta, 0):
		return fmt.Errorf("%w: model rope_theta %g, want a finite value >= 0", ErrInput, c.RopeTheta)
	}
	for i, k := range c.Layers {
		if k != LayerAttention && k != LayerMamba2 && k != LayerLightning {
			return fmt.Errorf("%w: model layer %d has kind %q (want attention, mamba2 or lightning)", ErrInput, i, k)
		}
	}
	return nil
}

// Count returns the number of layers of kind k.
func (c HybridConfig) Count(k LayerKind) int {
	n := 0
	for _, l := range c.Layers {
		if l == k {
			n++
		}
	}
	return n
}

// attnWeights are one attention layer's projections, row-major (out, in).
type attnWeights struct {
	wq, wk, wv, wo []float64
}

type hybridLayer struct {
	kind  LayerKind
	index int       // among the layers of its kind: the cache layer
	rec   int       // among the recurrent layers (mamba2, lightning), or -1
	norm  []float64 // the pre-norm weight (d)
	attn  *attnWeights
	m2    *Mamba2
	light *Lightning
}

// Hybrid is a tiny hybrid language model with deterministic random
// weights, for serving workloads and end-to-end checks of the caches: token
// embedding, then per layer x += mixer(RMSNorm(x)) with the mixer of the
// layer's kind, then a final RMSNorm and the logits; the next token is
// their argmax (greedy).
//
// It runs two ways that must agree token for token: Logits and Generate
// recompute the whole sequence with no cache at all (contiguous causal
// attention, Mamba2's causal convolution, lightning's block-wise path), and
// Step runs some tokens of several sequences through the caches (paged
// attention over the pages a StepIO wrote, Mamba2 and lightning recurrences
// from the states it holds). All math is float64; the caches a StepIO holds
// must be float64 too, so both ways pick the same tokens.
//
// A Hybrid is immutable and safe for concurrent use.
type Hybrid struct {
	cfg       HybridConfig
	embed     []float64 // (V, d)
	finalNorm []float64 // (d)
	unembed   []float64 // (V, d)
	layers    []hybridLayer
	rope      []float64 // inverse frequencies (HeadDim/2)
	recurrent int       // number of mamba2 and lightning layers
}

// NewHybrid builds the model cfg describes, drawing every weight from the
// seeded generator: projections from N(0, 1/fan_in), norms at 1, Mamba2's
// A in [1, 16], dt in [0.001, 0.1] and D at 1 as Mamba2's initialisation does.
func NewHybrid(cfg HybridConfig) (*Hybrid, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Layers = append([]LayerKind(nil), cfg.Layers...)
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^hybridStream))
	d := cfg.Hidden
	normal := func(n, fanIn int) []float64 {
		s := 1 / math.Sqrt(float64(fanIn))
		out := make([]float64, n)
		for i := range out {
			out[i] = rng.NormFloat64() * s
		}
		return out
	}
	ones := func(n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = 1
		}
		return out
	}
	t := func(data []float64, shape ...int) tensor.Tensor {
		return tensor.Must(tensor.FromFloat64s(tensor.Float64, data, shape...))
	}
	m := &Hybrid{cfg: cfg, embed: normal(cfg.Vocab*d, 1), finalNorm: ones(d), unembed: normal(cfg.Vocab*d, d)}
	counts := map[LayerKind]int{}
	for li, kind := range cfg.Layers {
		l := hybridLayer{kind: kind, index: counts[kind], rec: -1, norm: ones(d)}
		counts[kind]++
		switch kind {
		case LayerAttention:
			hq, hkv := cfg.Heads*cfg.HeadDim, cfg.KVHeads*cfg.HeadDim
			l.attn = &attnWeights{wq: normal(hq*d, d), wk: normal(hkv*d, d), wv: normal(hkv*d, d), wo: normal(d*hq, hq)}
		case LayerMamba2:
			h, p, g, n, k := cfg.Mamba2Heads, cfg.Mamba2HeadDim, cfg.Mamba2Groups, cfg.Mamba2State, cfg.Mamba2Conv
			inner, conv := h*p, h*p+2*g*n
			aLog, dtBias := make([]float64, h), make([]float64, h)
			for i := range h {
				aLog[i] = math.Log(1 + 15*rng.Float64())
				dt := math.Exp(math.Log(0.001) + rng.Float64()*(math.Log(0.1)-math.Log(0.001)))
				dtBias[i] = dt + math.Log(-math.Expm1(-dt)) // softplus⁻¹(dt)
			}
			mw := Mamba2Weights{Heads: h, HeadDim: p, Groups: g, StateSize: n,
				ConvWeight: t(normal(conv*k, k), conv, k), ConvBias: t(normal(conv, 1), conv),
				DtBias: t(dtBias, h), ALog: t(aLog, h), D: t(ones(h), h),
				InProj: t(normal((2*inner+2*g*n+h)*d, d), 2*inner+2*g*n+h, d), NormWeight: t(ones(inner), inner),
				OutProj: t(normal(d*inner, inner), d, inner)}
			mm, err := NewMamba2(mw)
			if err != nil {
				return nil, err
			}
			l.m2 = mm
		case LayerLightning:
			h, dh := cfg.LightningHeads, cfg.LightningHeadDim
			lw := LightningWeights{Heads: h, HeadDim: dh, LayerIdx: li, NumLayers: len(cfg.Layers), BlockSize: cfg.LightningBlock,
				QKVProj: t(normal(3*h*dh*d, d), 3*h*dh, d), OutputGate: t(normal(h*dh*d, d), h*dh, d),
				OutProj: t(normal(d*h*dh, h*dh), d, h*dh), NormWeight: t(ones(h*dh), h*dh)}
			ll, err := NewLightning(lw)
			if err != nil {
				return nil, err
			}
			l.light = ll
		}
		if kind != LayerAttention {
			l.rec = m.recurrent
			m.recurrent++
		}
		m.layers = append(m.layers, l)
	}
	theta := cfg.RopeTheta
	if theta == 0 {
		theta = 10000
	}
	m.rope = make([]float64, cfg.HeadDim/2)
	for i := range m.rope {
		m.rope[i] = math.Pow(theta, -2*float64(i)/float64(cfg.HeadDim))
	}
	return m, nil
}

// Config returns the model's configuration.
func (m *Hybrid) Config() HybridConfig {
	c := m.cfg
	c.Layers = append([]LayerKind(nil), c.Layers...)
	return c
}

// RecurrentLayers returns the number of mamba2 and lightning layers: the
// length of a RecurrentState.
func (m *Hybrid) RecurrentLayers() int { return m.recurrent }

// checkTokens checks that every token id is in the vocabulary.
func (m *Hybrid) checkTokens(tokens []int32) error {
	for i, tok := range tokens {
		if tok < 0 || int(tok) >= m.cfg.Vocab {
			return fmt.Errorf("%w: token %d at index %d is outside the vocabulary 0..%d", ErrInput, tok, i, m.cfg.Vocab-1)
		}
	}
	return nil
}

// embedTokens returns the (T, d) embeddings of tokens.
func (m *Hybrid) embedTokens(tokens []int32) []float64 {
	d := m.cfg.Hidden
	x := make([]float64, len(tokens)*d)
	for i, tok := range tokens {
		copy(x[i*d:(i+1)*d], m.embed[int(tok)*d:(int(tok)+1)*d])
	}
	return x
}

// normed returns RMSNorm(x) of every d-vector of x with weight w.
func (m *Hybrid) normed(x, w []float64) []float64 {
	d := m.cfg.Hidden
	out := make([]float64, len(x))
	for i := 0; i < len(x); i += d {
		rmsNorm(out[i:i+d], x[i:i+d], w, 1, 1e-6)
	}
	return out
}

// next returns the argmax of the logits of hidden vector x (the lowest id
// among equal maxima) and the logits.
func (m *Hybrid) next(x []float64) (int32, []float64) {
	xn := make([]float64, len(x))
	rmsNorm(xn, x, m.finalNorm, 1, 1e-6)
	logits := make([]float64, m.cfg.Vocab)
	matVec(logits, m.unembed, xn)
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best), logits
}

// rotate applies the rotary embedding at position pos to each head of x
// (heads × HeadDim), in place.
func (m *Hybrid) rotate(x []float64, pos int) {
	dim := m.cfg.HeadDim
	for h := 0; h < len(x); h += dim {
		for i, f := range m.rope {
			s, c := math.Sincos(float64(pos) * f)
			a, b := x[h+2*i], x[h+2*i+1]
			x[h+2*i], x[h+2*i+1] = a*c-b*s, a*s+b*c
		}
	}
}

// qkv projects the normed hidden vectors xn (T, d) of tokens at positions
// start, start+1, ... into rotated queries (T, Hq·D), rotated keys and
// values (T, Hkv·D).
func (m *Hybrid) qkv(w *attnWeights, xn []float64, start int) (q, k, v []float64) {
	d := m.cfg.Hidden
	t := len(xn) / d
	hq, hkv := m.cfg.Heads*m.cfg.HeadDim, m.cfg.KVHeads*m.cfg.HeadDim
	q, k, v = make([]float64, t*hq), make([]float64, t*hkv), make([]float64, t*hkv)
	for i := range t {
		x := xn[i*d : (i+1)*d]
		matVec(q[i*hq:(i+1)*hq], w.wq, x)
		matVec(k[i*hkv:(i+1)*hkv], w.wk, x)
		matVec(v[i*hkv:(i+1)*hkv], w.wv, x)
		m.rotate(q[i*hq:(i+1)*hq], start+i)
		m.rotate(k[i*hkv:(i+1)*hkv], start+i)
	}
	return q, k, v
}

// addOut adds W_o·o of every token of o (T, Hq·D) to x (T, d).
func (m *Hybrid) addOut(x []float64, w *attnWeights, o []float64) {
	d, hq := m.cfg.Hidden, m.cfg.Heads*m.cfg.HeadDim
	y := make([]float64, d)
	for i := range len(x) / d {
		matVec(y, w.wo, o[i*hq:(i+1)*hq])
		for j := range y {
			x[i*d+j] += y[j]
		}
	}
}

// Logits recomputes the whole sequence tokens with no cache and returns the
// logits after its last token (Vocab values).
func (m *Hybrid) Logits(tokens []int32) ([]float64, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrInput)
	}
	if err := m.checkTokens(tokens); err != nil {
		return nil, err
	}
	d, t := m.cfg.Hidden, len(tokens)
	x := m.embedTokens(tokens)
	for _, l := range m.layers {
		xn := m.normed(x, l.norm)
		xnT := tensor.Must(tensor.FromFloat64s(tensor.Float64, xn, 1, t, d))
		switch l.kind {
		case LayerAttention:
			q, k, v := m.qkv(l.attn, xn, 0)
			hq, hkv, dim := m.cfg.Heads, m.cfg.KVHeads, m.cfg.HeadDim
			o, err := AttentionContiguous(
				tensor.Must(tensor.FromFloat64s(tensor.Float64, q, 1, t, hq, dim)),
				tensor.Must(tensor.FromFloat64s(tensor.Float64, k, 1, t, hkv, dim)),
				tensor.Must(tensor.FromFloat64s(tensor.Float64, v, 1, t, hkv, dim)),
				transformer.CausalMask(t), 0, tensor.Float64)
			if err != nil {
				return nil, err
			}
			m.addOut(x, l.attn, o.Float64s())
		case LayerMamba2:
			out, err := l.m2.Forward(Mamba2Input{Hidden: xnT}, tensor.Float64)
			if err != nil {
				return nil, err
			}
			addInto(x, out.Out.Float64s())
		case LayerLightning:
			out, err := l.light.Forward(xnT, tensor.Float64)
			if err != nil {
				return nil, err
			}
			addInto(x, out.Out.Float64s())
		}
	}
	_, logits := m.next(x[(t-1)*d:])
	return logits, nil
}

func addInto(x, y []float64) {
	for i := range x {
		x[i] += y[i]
	}
}

// Generate returns the n tokens greedy decoding appends to prompt,
// recomputing the whole sequence with no cache for every token (Logits):
// the reference a cached serving path must reproduce exactly. It costs
// O(n · (len(prompt)+n)²) attention work: use it on short sequences.
func (m *Hybrid) Generate(prompt []int32, n int) ([]int32, error) {
	if n < 0 {
		return nil, fmt.Errorf("%w: %d tokens to generate", ErrInput, n)
	}
	seq := append([]int32(nil), prompt...)
	out := make([]int32, 0, n)
	for range n {
		logits, err := m.Logits(seq)
		if err != nil {
			return nil, err
		}
		tok := argmax(logits)
		seq = append(seq, tok)
		out = append(out, tok)
	}
	return out, nil
}

func argmax(v []float64) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}
