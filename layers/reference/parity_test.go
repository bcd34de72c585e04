package reference

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// gqaOracle is attention_gqa.json with its tensors in (batch, seq, heads,
// head_dim) order.
type gqaOracle struct {
	b, t, hq, hkv, d int
	scale            float64
	splits           []int
	q, k, v          []float64 // (B, T, H, D)
	padMask          []float64 // (B, T)
	c                oracleCase
}

func loadGQA(t *testing.T) gqaOracle {
	c := loadOracle(t, "attention_gqa.json")
	o := gqaOracle{c: c, b: c.int(t, "batch"), t: c.int(t, "seqlen"), hq: c.int(t, "num_attention_heads"),
		hkv: c.int(t, "num_key_value_heads"), d: c.int(t, "head_dim"), scale: c.Config["scaling"].(float64)}
	for _, s := range c.Config["prefill_splits"].([]any) {
		o.splits = append(o.splits, int(s.(float64)))
	}
	o.q, _ = c.Inputs["q"].permute(t, "batch", "seq", "q_heads", "head_dim")
	o.k, _ = c.Inputs["k"].permute(t, "batch", "seq", "kv_heads", "head_dim")
	o.v, _ = c.Inputs["v"].permute(t, "batch", "seq", "kv_heads", "head_dim")
	o.padMask, _ = c.Inputs["attention_mask_padded"].permute(t, "batch", "seq")
	return o
}

// slice returns tokens [s, s+n) of every row of a (B, T, H, D) array as a
// tensor of dtype prec (rounding the float64 inputs, as the float32 oracle did).
func (o gqaOracle) slice(t *testing.T, data []float64, heads, s, n int, prec tensor.DType) tensor.Tensor {
	row := heads * o.d
	out := make([]float64, 0, o.b*n*row)
	for b := range o.b {
		out = append(out, data[(b*o.t+s)*row:(b*o.t+s+n)*row]...)
	}
	return tensor.Must(tensor.FromFloat64s(prec, out, o.b, n, heads, o.d))
}

// schedules are the ways the sequence is fed: one token at a time, and each
// prefill split followed by single-token steps.
func (o gqaOracle) schedules() map[string][]int {
	out := map[string][]int{"token-by-token": ones(o.t)}
	for _, p := range o.splits {
		out[fmt.Sprintf("prefill%d-then-decode", p)] = append([]int{p}, ones(o.t-p)...)
	}
	return out
}

func ones(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = 1
	}
	return out
}

// stepper feeds one chunk of tokens [s, s+n) and returns the attention output
// for them, (B, n, Hq, D).
type stepper interface {
	step(t *testing.T, s, n int) tensor.Tensor
	finalKeys(t *testing.T) []float64 // (B, T, Hkv, D)
}

type contiguousStepper struct {
	o     gqaOracle
	prec  tensor.DType
	mask  transformer.Mask
	view  transformer.View
	lastK tensor.Tensor
}

func newContiguous(t *testing.T, o gqaOracle, prec tensor.DType, pad []float64) *contiguousStepper {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: o.b, SequenceLength: o.t, NumHiddenLayers: 1,
		NumHeads: transformer.Ptr(o.hkv), HeadDim: transformer.Ptr(o.d)})
	require.NoError(t, err)
	cache, err := transformer.Init(meta, prec, nil)
	require.NoError(t, err)
	view, err := cache.View(0)
	require.NoError(t, err)
	bits := make([]bool, len(pad))
	for i, x := range pad {
		bits[i] = x == 1
	}
	mask, err := transformer.NewMask([]int{o.b, o.t}, bits)
	require.NoError(t, err)
	return &contiguousStepper{o: o, prec: prec, mask: mask, view: view}
}

func (c *contiguousStepper) step(t *testing.T, s, n int) tensor.Tensor {
	o := c.o
	q := o.slice(t, o.q, o.hq, s, n, c.prec)
	k, v, mask, next, err := c.view.ConcatenateToCache(q, o.slice(t, o.k, o.hkv, s, n, c.prec), o.slice(t, o.v, o.hkv, s, n, c.prec),
		c.mask, transformer.ConcatOptions{CausalMask: transformer.CausalMask(o.t)})
	require.NoError(t, err)
	c.view, c.lastK = next, k
	out, err := AttentionContiguous(q, k, v, mask, o.scale, c.prec)
	require.NoError(t, err)
	return out
}

func (c *contiguousStepper) finalKeys(t *testing.T) []float64 { return c.lastK.Float64s() }

type pagedStepper struct {
	o      gqaOracle
	prec   tensor.DType
	keyOK  [][]bool
	tables [][]int32
	view   paged.View
}

// pageSize 2 makes the prefill split (3 tokens) end inside a page, so the
// decode that follows appends into a partly written page.
const pageSize = 2

func newPaged(t *testing.T, o gqaOracle, prec tensor.DType, pad []float64) *pagedStepper {
	perRow := (o.t + pageSize - 1) / pageSize
	pages := 1 + o.b*perRow
	elem := int64(prec.Size()) * int64(o.hkv*o.d*2*pageSize)
	meta, err := paged.NewMetadata(paged.MetadataConfig{BatchSize: o.b, NumHiddenLayers: 1, MaxSequences: o.t, PageSize: pageSize,
		NumKVHeads: o.hkv, KVHeadDimSize: o.d, HBMUtilization: 0.5, DType: prec,
		Memory: paged.StaticMemory{BytesReservableLimit: 2 * elem * int64(pages), BytesInUse: 0}})
	require.NoError(t, err)
	require.Equal(t, pages, meta.NumPagesPerLayer)
	view, err := paged.NewView(meta, prec, 0)
	require.NoError(t, err)
	// Physical pages are handed out in a scrambled order, so a wrong page
	// lookup cannot pass by accident.
	tables := make([][]int32, o.b)
	next := int32(pages - 1)
	for p := range perRow {
		for b := range o.b {
			if tables[b] == nil {
				tables[b] = make([]int32, perRow)
			}
			tables[b][(p*3)%perRow] = next
			next--
		}
	}
	keyOK := make([][]bool, o.b)
	for b := range o.b {
		keyOK[b] = make([]bool, o.t)
		for j := range o.t {
			keyOK[b][j] = pad[b*o.t+j] == 1
		}
	}
	return &pagedStepper{o: o, prec: prec, keyOK: keyOK, tables: tables, view: view}
}

func (p *pagedStepper) step(t *testing.T, s, n int) tensor.Tensor {
	o := p.o
	q := o.slice(t, o.q, o.hq, s, n, p.prec)
	k, v := o.slice(t, o.k, o.hkv, s, n, p.prec), o.slice(t, o.v, o.hkv, s, n, p.prec)
	var err error
	if n == 1 {
		k1, _ := k.Reshape(o.b, o.hkv, o.d)
		v1, _ := v.Reshape(o.b, o.hkv, o.d)
		pos := make([]int32, o.b)
		for b := range pos {
			pos[b] = int32(s)
		}
		p.view, err = p.view.WriteDecodes(k1, v1, paged.StepMetadata{DecodesPosition: pos, DecodesPageTable: p.tables})
		require.NoError(t, err)
	} else {
		positions := make([]int32, n)
		for i := range positions {
			positions[i] = int32(s + i)
		}
		for b := range o.b { // prefill is one sequence per write
			kb := tensor.Must(tensor.FromFloat64s(p.prec, k.Float64s()[b*n*o.hkv*o.d:(b+1)*n*o.hkv*o.d], n, o.hkv, o.d))
			vb := tensor.Must(tensor.FromFloat64s(p.prec, v.Float64s()[b*n*o.hkv*o.d:(b+1)*n*o.hkv*o.d], n, o.hkv, o.d))
			p.view, err = p.view.WritePrefill(kb, vb, paged.StepMetadata{PrefillLength: int32(s + n), PrefillPosition: positions, PrefillPageTable: p.tables[b]})
			require.NoError(t, err)
		}
	}
	qpos := make([][]int32, o.b)
	for b := range qpos {
		for i := range n {
			qpos[b] = append(qpos[b], int32(s+i))
		}
	}
	out, err := AttentionPaged(PagedInput{Query: q, KeyPages: p.view.KeyPages(), ValuePages: p.view.ValuePages(),
		PageTables: p.tables, Positions: qpos, KeyMask: p.keyOK, Scale: o.scale}, p.prec)
	require.NoError(t, err)
	return out
}

func (p *pagedStepper) finalKeys(t *testing.T) []float64 {
	var out []float64
	for b := range p.o.b {
		k, _, err := p.view.Gather(p.tables[b], p.o.t)
		require.NoError(t, err)
		out = append(out, k.Float64s()...)
	}
	return out
}

func maxAbsDiff(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

// TestAttentionParityWithOracle feeds attention_gqa.json through the
// contiguous and the paged cache, token by token and as prefill-then-decode,
// with and without left padding, and checks the outputs and final caches
// against the float64 (1e-12) and float32 (1e-5) reference runs.
func TestAttentionParityWithOracle(t *testing.T) {
	o := loadGQA(t)
	for _, prec := range []struct {
		dtype   tensor.DType
		tol     float64
		outputs map[string]oracleTensor
	}{
		{tensor.Float64, 1e-12, o.c.Outputs64},
		{tensor.Float32, 1e-5, o.c.Outputs32},
	} {
		for _, pad := range []string{"nopad", "leftpad"} {
			mask, _ := prec.outputs[pad+"_attention_mask"].permute(t, "batch", "seq")
			valid, _ := prec.outputs[pad+"_query_valid"].permute(t, "batch", "seq")
			want, _ := prec.outputs[pad+"_out_full"].permute(t, "batch", "seq", "q_heads", "head_dim")
			wantK, _ := prec.outputs[pad+"_k_cache_final"].permute(t, "batch", "seq", "kv_heads", "head_dim")
			if pad == "leftpad" {
				require.Equal(t, o.padMask, mask, "the oracle's left-pad mask is the input mask")
			}
			for sched, chunks := range o.schedules() {
				for _, kind := range []string{"contiguous", "paged"} {
					name := fmt.Sprintf("%s/%s/%s/%s", prec.dtype, pad, sched, kind)
					t.Run(name, func(t *testing.T) {
						var st stepper
						if kind == "contiguous" {
							st = newContiguous(t, o, prec.dtype, mask)
						} else {
							st = newPaged(t, o, prec.dtype, mask)
						}
						got := make([]float64, len(want))
						row := o.hq * o.d
						s := 0
						for _, n := range chunks {
							out := st.step(t, s, n).Float64s()
							for b := range o.b {
								copy(got[(b*o.t+s)*row:(b*o.t+s+n)*row], out[b*n*row:(b+1)*n*row])
							}
							s += n
						}
						// The oracle zeroes rows of pure padding (query_valid = 0).
						for bt, ok := range valid {
							if ok == 0 {
								clear(got[bt*row : (bt+1)*row])
							}
						}
						require.LessOrEqual(t, maxAbsDiff(got, want), prec.tol, "out_full")
						require.LessOrEqual(t, maxAbsDiff(st.finalKeys(t), wantK), prec.tol, "k_cache_final")
					})
				}
			}
		}
	}
}
