package parity

import (
	"math"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// attentionCase holds an attention_gqa file's inputs in (batch, seq, heads,
// head_dim) layout, in one precision, and the caches' storage (the zero
// KVStorage: unquantized caches of that precision).
type attentionCase struct {
	c                *caseFile
	prec             tensor.DType
	kv               KVStorage
	b, t, hq, hkv, d int
	scale            float64
	q, k, v          tensor.Tensor
}

// storage returns the caches' storage.
func (a *attentionCase) storage() KVStorage {
	if a.kv.IsZero() {
		return KVStorage{DType: a.prec}
	}
	return a.kv
}

// attentionPageSize is the paged cache's page size: small, so that chunks
// and prefill splits start and end inside pages.
const attentionPageSize = 2

func runAttention(c *caseFile, prec tensor.DType) ([]observation, error) {
	return runAttentionStorage(c, prec, KVStorage{})
}

// runAttentionStorage runs the attention case with the math in prec and the
// caches storing keys and values as kv says (the zero KVStorage: in prec).
func runAttentionStorage(c *caseFile, prec tensor.DType, kv KVStorage) ([]observation, error) {
	a := &attentionCase{c: c, prec: prec, kv: kv}
	var err error
	if a.q, err = c.input(prec, "q", "batch", "seq", "q_heads", "head_dim"); err != nil {
		return nil, err
	}
	if a.k, err = c.input(prec, "k", "batch", "seq", "kv_heads", "head_dim"); err != nil {
		return nil, err
	}
	if a.v, err = c.input(prec, "v", "batch", "seq", "kv_heads", "head_dim"); err != nil {
		return nil, err
	}
	a.b, a.t, a.hq, a.d = a.q.Dim(0), a.q.Dim(1), a.q.Dim(2), a.q.Dim(3)
	a.hkv = a.k.Dim(2)
	for _, x := range []struct {
		name string
		t    tensor.Tensor
	}{{"k", a.k}, {"v", a.v}} {
		if !x.t.HasShape(a.b, a.t, a.hkv, a.d) {
			return nil, c.errorf("inputs.%s has shape %v (batch, seq, kv_heads, head_dim), want [%d %d %d %d] to match q", x.name, x.t.Shape(), a.b, a.t, a.hkv, a.d)
		}
	}
	if a.hkv == 0 || a.hq%a.hkv != 0 {
		return nil, c.errorf("inputs.q has %d heads, not a multiple of the %d kv heads of inputs.k", a.hq, a.hkv)
	}
	if a.scale, err = c.configFloat("scaling", 1/math.Sqrt(float64(a.d))); err != nil {
		return nil, err
	}
	padded, _, err := c.get("inputs", c.Inputs, "attention_mask_padded", "batch", "seq")
	if err != nil {
		return nil, err
	}
	if len(padded) != a.b*a.t {
		return nil, c.errorf("inputs.attention_mask_padded has %d values, want batch %d x seq %d", len(padded), a.b, a.t)
	}
	splits, err := c.splits(a.t)
	if err != nil {
		return nil, err
	}
	ones := make([]float64, a.b*a.t)
	for i := range ones {
		ones[i] = 1
	}
	scheds := append([]schedule{{"full", []int{a.t}}}, schedules(a.t, splits)...)
	var obs []observation
	for _, pad := range []struct {
		name string
		mask []float64
	}{{"nopad", ones}, {"leftpad", padded}} {
		valid, _, err := c.output(prec, pad.name+"_query_valid", "batch", "seq")
		if err != nil {
			return nil, err
		}
		if len(valid) != a.b*a.t {
			return nil, c.errorf("%s_query_valid has %d values, want %d", pad.name, len(valid), a.b*a.t)
		}
		for _, s := range scheds {
			for _, path := range []string{"contiguous", "paged"} {
				out, keys, vals, err := a.feed(path, pad.mask, s.chunks)
				if err != nil {
					return nil, err
				}
				row := a.hq * a.d
				for bt, ok := range valid { // the reference zeroes rows of pure padding
					if ok == 0 {
						clear(out[bt*row : (bt+1)*row])
					}
				}
				ref := pad.name + "_out_step"
				if s.name == "full" {
					ref = pad.name + "_out_full"
				}
				base := pad.name + "/" + s.name + "/" + path + "/"
				kvAxes := []string{"batch", "seq", "kv_heads", "head_dim"}
				obs = append(obs,
					observation{check: base + "out", ref: ref, axes: []string{"batch", "seq", "q_heads", "head_dim"}, got: out},
					observation{check: base + "k_cache", ref: pad.name + "_k_cache_final", axes: kvAxes, got: keys},
					observation{check: base + "v_cache", ref: pad.name + "_v_cache_final", axes: kvAxes, got: vals})
			}
		}
	}
	return obs, nil
}

// feed runs the sequence through one cache in chunks and returns the
// attention output (B, T, Hq, D) and the final key and value caches
// (B, T, Hkv, D).
func (a *attentionCase) feed(path string, mask []float64, chunks []int) (out, keys, vals []float64, err error) {
	seq := newTokenSeq(a.b, a.t, a.hq*a.d)
	var step func(s, n int) (tensor.Tensor, error)
	var final func() (k, v []float64, err error)
	if path == "contiguous" {
		step, final, err = a.contiguous(mask)
	} else {
		step, final, err = a.paged(mask)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	s := 0
	for _, n := range chunks {
		o, err := step(s, n)
		if err != nil {
			return nil, nil, nil, err
		}
		seq.put(s, o)
		s += n
	}
	keys, vals, err = final()
	return seq.data, keys, vals, err
}

func (a *attentionCase) contiguous(pad []float64) (func(s, n int) (tensor.Tensor, error), func() ([]float64, []float64, error), error) {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: a.b, SequenceLength: a.t, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(a.hkv), HeadDim: transformer.Ptr(a.d)})
	if err != nil {
		return nil, nil, a.c.errorf("contiguous cache: %v", err)
	}
	view, err := transformer.NewViewStorage(meta, a.storage().transformerStorage(), nil, nil)
	if err != nil {
		return nil, nil, err
	}
	bits := make([]bool, len(pad))
	for i, x := range pad {
		bits[i] = x == 1
	}
	attn, err := transformer.NewMask([]int{a.b, a.t}, bits)
	if err != nil {
		return nil, nil, err
	}
	causal := transformer.CausalMask(a.t)
	var lastK, lastV tensor.Tensor
	step := func(s, n int) (tensor.Tensor, error) {
		q := sliceTokens(a.q, s, n)
		k, v, m, next, err := view.ConcatenateToCache(q, sliceTokens(a.k, s, n), sliceTokens(a.v, s, n), attn,
			transformer.ConcatOptions{CausalMask: causal})
		if err != nil {
			return tensor.Tensor{}, err
		}
		view, lastK, lastV = next, k, v
		return reference.AttentionContiguous(q, k, v, m, a.scale, a.prec)
	}
	final := func() ([]float64, []float64, error) { return lastK.Float64s(), lastV.Float64s(), nil }
	return step, final, nil
}

func (a *attentionCase) paged(pad []float64) (func(s, n int) (tensor.Tensor, error), func() ([]float64, []float64, error), error) {
	ps := attentionPageSize
	perRow := (a.t + ps - 1) / ps
	pages := 1 + a.b*perRow
	st := a.storage()
	pageBytes := int64(2 * ps * a.hkv * a.d * st.DType.Size())
	meta, err := paged.NewMetadata(paged.MetadataConfig{BatchSize: a.b, NumHiddenLayers: 1, MaxSequences: a.t, PageSize: ps,
		NumKVHeads: a.hkv, KVHeadDimSize: a.d, HBMUtilization: 0.5, DType: st.DType,
		Memory: paged.StaticMemory{BytesReservableLimit: 2 * pageBytes * int64(pages)}})
	if err != nil {
		return nil, nil, a.c.errorf("paged cache: %v", err)
	}
	view, err := paged.NewViewStorage(meta, st.pagedStorage(), 0)
	if err != nil {
		return nil, nil, err
	}
	// Rows get their pages in descending, interleaved order, so a wrong
	// lookup cannot pass by accident.
	tables := make([][]int32, a.b)
	for b := range tables {
		tables[b] = make([]int32, perRow)
		for p := range perRow {
			tables[b][p] = int32(pages - 1 - p*a.b - b)
		}
	}
	keyOK := make([][]bool, a.b)
	for b := range keyOK {
		keyOK[b] = make([]bool, a.t)
		for j := range a.t {
			keyOK[b][j] = pad[b*a.t+j] == 1
		}
	}
	step := func(s, n int) (tensor.Tensor, error) {
		k, v := sliceTokens(a.k, s, n), sliceTokens(a.v, s, n)
		if n == 1 {
			k1, _ := k.Reshape(a.b, a.hkv, a.d)
			v1, _ := v.Reshape(a.b, a.hkv, a.d)
			pos := make([]int32, a.b)
			for b := range pos {
				pos[b] = int32(s)
			}
			if view, err = view.WriteDecodes(k1, v1, paged.StepMetadata{DecodesPosition: pos, DecodesPageTable: tables}); err != nil {
				return tensor.Tensor{}, err
			}
		} else {
			positions := make([]int32, n)
			for i := range positions {
				positions[i] = int32(s + i)
			}
			for b := range a.b { // a prefill writes one sequence
				kb, _ := sliceRow(k, b).Reshape(n, a.hkv, a.d)
				vb, _ := sliceRow(v, b).Reshape(n, a.hkv, a.d)
				if view, err = view.WritePrefill(kb, vb, paged.StepMetadata{PrefillLength: int32(s + n), PrefillPosition: positions, PrefillPageTable: tables[b]}); err != nil {
					return tensor.Tensor{}, err
				}
			}
		}
		qpos := make([][]int32, a.b)
		for b := range qpos {
			for i := range n {
				qpos[b] = append(qpos[b], int32(s+i))
			}
		}
		return reference.AttentionPaged(reference.PagedInput{Query: sliceTokens(a.q, s, n), KeyPages: view.KeyPages(), ValuePages: view.ValuePages(),
			PageTables: tables, Positions: qpos, KeyMask: keyOK, Scale: a.scale}, a.prec)
	}
	final := func() ([]float64, []float64, error) {
		var keys, vals []float64
		for b := range a.b {
			k, v, err := view.Gather(tables[b], a.t)
			if err != nil {
				return nil, nil, err
			}
			keys, vals = append(keys, k.Float64s()...), append(vals, v.Float64s()...)
		}
		return keys, vals, nil
	}
	return step, final, nil
}

// sliceRow returns row b of a (B, ...) tensor as a (1, ...) tensor.
func sliceRow(t tensor.Tensor, b int) tensor.Tensor {
	shape := t.Shape()
	per := t.Len() / shape[0]
	out := make([]float64, per)
	_ = t.ReadFloat64s(out, b*per)
	shape[0] = 1
	return tensor.Must(tensor.FromFloat64s(t.DType(), out, shape...))
}
