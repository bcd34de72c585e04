package reference

import (
	"errors"
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// ErrInput reports inputs whose shapes, dtypes or indices do not fit.
var ErrInput = errors.New("reference: bad input")

// Precision is the floating-point type the math runs in: tensor.Float64 or
// tensor.Float32. Inputs are read (and rounded) into it, outputs have it.
type Precision = tensor.DType

type float interface{ ~float32 | ~float64 }

// gqa holds the dimensions shared by both attention entry points.
type gqa struct {
	b, t, hq, hkv, d int
	scale            float64
}

func newGQA(q tensor.Tensor, hkv, d int, scale float64) (gqa, error) {
	if q.Rank() != 4 {
		return gqa{}, fmt.Errorf("%w: query has shape %v, want (batch, tokens, q_heads, head_dim)", ErrInput, q.Shape())
	}
	g := gqa{b: q.Dim(0), t: q.Dim(1), hq: q.Dim(2), hkv: hkv, d: q.Dim(3), scale: scale}
	if g.d != d {
		return gqa{}, fmt.Errorf("%w: query head_dim %d, key head_dim %d", ErrInput, g.d, d)
	}
	if hkv <= 0 || g.hq%hkv != 0 {
		return gqa{}, fmt.Errorf("%w: %d query heads are not a multiple of %d kv heads", ErrInput, g.hq, hkv)
	}
	if scale == 0 {
		g.scale = 1 / math.Sqrt(float64(d))
	}
	return g, nil
}

// keySource reads the key and value vectors of (row, key position, kv head).
type keySource[F float] interface {
	key(dst []F, b, j, h int)
	value(dst []F, b, j, h int)
}

// attend computes out[b,i,h,:] = softmax_j(scale·q·k_j masked) · v_j for
// every row, query and head; visible(b, i, j) says whether query i of row b
// may read key j, for j in [0, nkeys). Masked logits get the precision's most
// negative finite value, as the reference kernels do, so a row that sees no
// key at all averages uniformly over all keys.
func attend[F float](g gqa, prec Precision, q tensor.Tensor, nkeys int, src keySource[F], visible func(b, i, j int) bool) []F {
	out := make([]F, g.b*g.t*g.hq*g.d)
	qv, kv, vv := make([]F, g.d), make([]F, g.d), make([]F, g.d)
	logits := make([]F, nkeys)
	acc := make([]F, g.d)
	minVal := F(prec.MinValue())
	group := g.hq / g.hkv
	for b := range g.b {
		for i := range g.t {
			for h := range g.hq {
				readRow(q, qv, ((b*g.t+i)*g.hq+h)*g.d)
				for x := range qv {
					qv[x] *= F(g.scale)
				}
				kh := h / group
				mx := minVal
				for j := range nkeys {
					if !visible(b, i, j) {
						logits[j] = minVal
						continue
					}
					src.key(kv, b, j, kh)
					var s F
					for x := range qv {
						s += qv[x] * kv[x]
					}
					logits[j] = s
					mx = max(mx, s)
				}
				var sum F
				for j := range logits {
					logits[j] = F(math.Exp(float64(logits[j] - mx)))
					sum += logits[j]
				}
				clear(acc)
				for j, w := range logits {
					if w == 0 {
						continue
					}
					src.value(vv, b, j, kh)
					for x := range acc {
						acc[x] += w * vv[x]
					}
				}
				o := out[((b*g.t+i)*g.hq+h)*g.d:]
				for x := range acc {
					o[x] = acc[x] / sum
				}
			}
		}
	}
	return out
}

func readRow[F float](t tensor.Tensor, dst []F, off int) {
	switch d := any(dst).(type) {
	case []float64:
		_ = t.ReadFloat64s(d, off)
	case []float32:
		_ = t.ReadFloat32s(d, off)
	}
}

func toTensor[F float](prec Precision, data []F, shape ...int) (tensor.Tensor, error) {
	switch d := any(data).(type) {
	case []float64:
		return tensor.FromFloat64s(prec, d, shape...)
	case []float32:
		return tensor.FromFloat32s(prec, d, shape...)
	}
	return tensor.Tensor{}, fmt.Errorf("%w: precision %s", ErrInput, prec)
}

func checkPrecision(prec Precision) error {
	if prec != tensor.Float64 && prec != tensor.Float32 {
		return fmt.Errorf("%w: precision %s (want float64 or float32)", ErrInput, prec)
	}
	return nil
}

// contiguousKeys reads keys from full caches (B, S, Hkv, D).
type contiguousKeys[F float] struct {
	k, v        tensor.Tensor
	s, hkv, dim int
}

func (c contiguousKeys[F]) key(dst []F, b, j, h int) {
	readRow(c.k, dst, ((b*c.s+j)*c.hkv+h)*c.dim)
}

func (c contiguousKeys[F]) value(dst []F, b, j, h int) {
	readRow(c.v, dst, ((b*c.s+j)*c.hkv+h)*c.dim)
}

// AttentionContiguous is grouped-query softmax attention over a contiguous
// cache: query (B, T, Hq, D), key and value (B, S, Hkv, D) as returned by
// ConcatenateToCache, and its mask (B, 1, T, S). Query head h reads kv head
// h / (Hq/Hkv). A scale of 0 means head_dim^-0.5. The result is (B, T, Hq, D)
// in precision prec.
func AttentionContiguous(query, key, value tensor.Tensor, mask transformer.Mask, scale float64, prec Precision) (tensor.Tensor, error) {
	if err := checkPrecision(prec); err != nil {
		return tensor.Tensor{}, err
	}
	if key.Rank() != 4 || !value.HasShape(key.Shape()...) {
		return tensor.Tensor{}, fmt.Errorf("%w: key %v and value %v, want equal (batch, seq, kv_heads, head_dim)", ErrInput, key.Shape(), value.Shape())
	}
	g, err := newGQA(query, key.Dim(2), key.Dim(3), scale)
	if err != nil {
		return tensor.Tensor{}, err
	}
	s := key.Dim(1)
	if key.Dim(0) != g.b {
		return tensor.Tensor{}, fmt.Errorf("%w: query batch %d, key batch %d", ErrInput, g.b, key.Dim(0))
	}
	if len(mask.Shape) != 4 || mask.Shape[0] != g.b || mask.Shape[1] != 1 || mask.Shape[2] != g.t || mask.Shape[3] != s || len(mask.Data) != g.b*g.t*s {
		return tensor.Tensor{}, fmt.Errorf("%w: mask shape %v, want [%d 1 %d %d]", ErrInput, mask.Shape, g.b, g.t, s)
	}
	visible := func(b, i, j int) bool { return mask.Data[(b*g.t+i)*s+j] }
	if prec == tensor.Float64 {
		out := attend(g, prec, query, s, contiguousKeys[float64]{key, value, s, g.hkv, g.d}, visible)
		return toTensor(prec, out, g.b, g.t, g.hq, g.d)
	}
	out := attend(g, prec, query, s, contiguousKeys[float32]{key, value, s, g.hkv, g.d}, visible)
	return toTensor(prec, out, g.b, g.t, g.hq, g.d)
}

// PagedInput is what paged attention reads.
type PagedInput struct {
	// Query is (B, T, Hq, D): T query tokens for each of B sequences.
	Query tensor.Tensor
	// KeyPages and ValuePages are a layer's page pool (Hkv, N, ps, D).
	KeyPages, ValuePages tensor.Tensor
	// PageTables maps, per sequence, logical page p to a physical page.
	PageTables [][]int32
	// Positions holds the absolute position of each query token (B, T).
	// Query (b, i) reads keys 0..Positions[b][i] of sequence b (causal).
	Positions [][]int32
	// KeyMask optionally excludes keys (left padding): key j of sequence b is
	// read only if KeyMask[b][j]. Nil means every key is valid.
	KeyMask [][]bool
	// Scale multiplies the logits; 0 means head_dim^-0.5.
	Scale float64
}

// pagedKeys reads keys through a page table.
type pagedKeys[F float] struct {
	k, v       tensor.Tensor
	tables     [][]int32
	n, ps, dim int
}

func (p pagedKeys[F]) off(b, j, h int) int {
	page := int(p.tables[b][j/p.ps])
	return ((h*p.n+page)*p.ps + j%p.ps) * p.dim
}

func (p pagedKeys[F]) key(dst []F, b, j, h int)   { readRow(p.k, dst, p.off(b, j, h)) }
func (p pagedKeys[F]) value(dst []F, b, j, h int) { readRow(p.v, dst, p.off(b, j, h)) }

// AttentionPaged is grouped-query softmax attention over a paged cache: the
// keys of sequence b at position j live in page PageTables[b][j/ps] at
// offset j%ps of every kv head's pool. The result is (B, T, Hq, D) in
// precision prec. Page-table entries that the positions reach must be inside
// the pool; anything else is an error naming the entry.
func AttentionPaged(in PagedInput, prec Precision) (tensor.Tensor, error) {
	if err := checkPrecision(prec); err != nil {
		return tensor.Tensor{}, err
	}
	kp := in.KeyPages
	if kp.Rank() != 4 || !in.ValuePages.HasShape(kp.Shape()...) {
		return tensor.Tensor{}, fmt.Errorf("%w: key pages %v and value pages %v, want equal (kv_heads, pages, page_size, head_dim)", ErrInput, kp.Shape(), in.ValuePages.Shape())
	}
	g, err := newGQA(in.Query, kp.Dim(0), kp.Dim(3), in.Scale)
	if err != nil {
		return tensor.Tensor{}, err
	}
	n, ps := kp.Dim(1), kp.Dim(2)
	if len(in.PageTables) != g.b || len(in.Positions) != g.b {
		return tensor.Tensor{}, fmt.Errorf("%w: %d page tables and %d position rows for batch %d", ErrInput, len(in.PageTables), len(in.Positions), g.b)
	}
	nkeys := 0
	for b := range g.b {
		if len(in.Positions[b]) != g.t {
			return tensor.Tensor{}, fmt.Errorf("%w: row %d has %d positions for %d query tokens", ErrInput, b, len(in.Positions[b]), g.t)
		}
		for _, p := range in.Positions[b] {
			if p < 0 || int(p)/ps >= len(in.PageTables[b]) {
				return tensor.Tensor{}, fmt.Errorf("%w: row %d position %d outside its %d pages of %d", ErrInput, b, p, len(in.PageTables[b]), ps)
			}
			for lp := 0; lp <= int(p)/ps; lp++ {
				if pg := in.PageTables[b][lp]; pg < 0 || int(pg) >= n {
					return tensor.Tensor{}, fmt.Errorf("%w: row %d page table entry %d is page %d, outside the pool of %d", ErrInput, b, lp, pg, n)
				}
			}
			nkeys = max(nkeys, int(p)+1)
			if in.KeyMask != nil && len(in.KeyMask[b]) <= int(p) {
				return tensor.Tensor{}, fmt.Errorf("%w: row %d key mask has %d entries, position %d needs more", ErrInput, b, len(in.KeyMask[b]), p)
			}
		}
	}
	visible := func(b, i, j int) bool {
		return j <= int(in.Positions[b][i]) && (in.KeyMask == nil || in.KeyMask[b][j])
	}
	// Keys past a row's reach are never visible, so reading them is skipped
	// by attend (their weight is exactly 0 once any key is visible). Clamp
	// the page lookups of invisible keys to page 0 so they stay in range.
	tables := make([][]int32, g.b)
	for b := range g.b {
		tables[b] = make([]int32, (nkeys+ps-1)/ps)
		copy(tables[b], in.PageTables[b])
	}
	if prec == tensor.Float64 {
		out := attend(g, prec, in.Query, nkeys, pagedKeys[float64]{k: kp, v: in.ValuePages, tables: tables, n: n, ps: ps, dim: g.d}, visible)
		return toTensor(prec, out, g.b, g.t, g.hq, g.d)
	}
	out := attend(g, prec, in.Query, nkeys, pagedKeys[float32]{k: kp, v: in.ValuePages, tables: tables, n: n, ps: ps, dim: g.d}, visible)
	return toTensor(prec, out, g.b, g.t, g.hq, g.d)
}
