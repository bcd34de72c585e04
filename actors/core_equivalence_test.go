package actors

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// This file checks the runtime against the core packages: a coreModel
// makes seeded random writes for one cache, applies them itself with the
// core package of its kind (no actor involved), keeps every reference
// version, and compares what a runtime version can see with it byte for
// byte. concurrency_test.go drives the same models from many goroutines.

// coreKinds are the five cache kinds, in the order the tests cycle through
// them.
var coreKinds = []string{"transformer", "paged", "mamba", "mamba2", "lightning"}

// coreModel is the reference of one cache driven through the runtime.
// next and apply alternate, once per step; check may run concurrently with
// them (readers compare versions while a writer steps).
type coreModel interface {
	// spec is the cache's (unsharded) spec.
	spec() Spec
	// next returns the next step's writes. The paged model allocates the
	// pages of its sequences through c's page-manager actor and through its
	// own page manager, and fails if the two hand out different pages.
	next(ctx context.Context, c *Cache) ([]LayerWrite, error)
	// apply applies ws (the writes next returned last) to the latest
	// reference version with the core package, records the result as the
	// next version and returns the results a step must return.
	apply(ws []LayerWrite) ([]Result, error)
	// check returns an error unless every layer of got holds exactly what
	// reference version got.Number can see.
	check(got Version) error
	// checkResults returns an error unless a step's results (got) equal the
	// reference's (want) for ws, which published version n.
	checkResults(n uint64, ws []LayerWrite, want, got []Result) error
}

// newCoreModel returns the model of a cache of kind whose writes are drawn
// from seed.
func newCoreModel(kind string, seed int64) (coreModel, error) {
	r := rand.New(rand.NewSource(seed))
	switch kind {
	case "transformer":
		return newTransformerModel(r)
	case "paged":
		return newPagedModel(r)
	case "mamba":
		return newMambaModel(r)
	case "mamba2":
		return newMamba2Model(r)
	case "lightning":
		return newLightningModel(r)
	}
	return nil, fmt.Errorf("no model for cache kind %q", kind)
}

// coreStep runs one step of m on c, on top of version base: it makes the
// writes, applies them to the reference, sends them through the runtime
// and compares the results. The reference version exists before the
// runtime publishes it, so a concurrent reader can always check what it
// reads.
func coreStep(ctx context.Context, c *Cache, m coreModel, base uint64) error {
	ws, err := m.next(ctx, c)
	if err != nil {
		return fmt.Errorf("step on %d: writes: %w", base, err)
	}
	want, err := m.apply(ws)
	if err != nil {
		return fmt.Errorf("step on %d: the core rejects the writes: %w", base, err)
	}
	v, got, err := c.Step(ctx, base, ws)
	if err != nil {
		return fmt.Errorf("step on %d: %w", base, err)
	}
	if v != base+1 {
		return fmt.Errorf("step on %d published version %d, want %d", base, v, base+1)
	}
	if err := m.checkResults(v, ws, want, got); err != nil {
		return fmt.Errorf("step on %d: results: %w", base, err)
	}
	return nil
}

// refVersion is one reference version: a view per layer and, for a paged
// cache, the sequences the version can see.
type refVersion struct {
	views []any
	seqs  []pagedSeq
}

// refLog holds a model's reference versions, 0, 1, ...; it is safe for
// concurrent use.
type refLog struct {
	mu   sync.Mutex
	vers []refVersion
}

func (r *refLog) push(v refVersion) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.vers = append(r.vers, v)
}

func (r *refLog) latest() refVersion {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.vers[len(r.vers)-1]
}

func (r *refLog) at(n uint64) (refVersion, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n >= uint64(len(r.vers)) {
		return refVersion{}, fmt.Errorf("no reference version %d (the reference has versions 0..%d)", n, len(r.vers)-1)
	}
	return r.vers[n], nil
}

// compare checks every layer of got against reference version got.Number
// with same(reference version, want view, got view).
func (r *refLog) compare(got Version, same func(ref refVersion, want, got any) error) error {
	ref, err := r.at(got.Number)
	if err != nil {
		return err
	}
	if len(got.Views) != len(ref.views) {
		return fmt.Errorf("version %d has %d layers, want %d", got.Number, len(got.Views), len(ref.views))
	}
	for l := range ref.views {
		if err := same(ref, ref.views[l], got.Views[l]); err != nil {
			return fmt.Errorf("version %d, layer %d: %w", got.Number, l, err)
		}
	}
	return nil
}

// nextViews returns a copy of the latest reference version's views.
func (r *refLog) nextViews() []any { return slices.Clone(r.latest().views) }

// viewAs returns view as a V, or an error naming what it is.
func viewAs[V any](view any) (V, error) {
	v, ok := view.(V)
	if !ok {
		var want V
		return v, fmt.Errorf("the view is a %T, want a %T", view, want)
	}
	return v, nil
}

// writeAs returns w as a W, or an error naming what it is.
func writeAs[W any](w Write) (W, error) {
	x, ok := w.(W)
	if !ok {
		var want W
		return x, fmt.Errorf("the write is a %T, want a %T", w, want)
	}
	return x, nil
}

// coreRand returns a float32 tensor of shape with values drawn from r
// (caches of another dtype convert it, as a model's outputs would be).
func coreRand(r *rand.Rand, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(r.NormFloat64())
	}
	return tensor.Must(tensor.FromFloat32s(tensor.Float32, vals, shape...))
}

// sameTensor returns an error unless want and got have the same dtype,
// shape and bytes.
func sameTensor(what string, want, got tensor.Tensor) error {
	if want.Equal(got) {
		return nil
	}
	if want.DType() == got.DType() && slices.Equal(want.Shape(), got.Shape()) {
		w, g := want.Float64s(), got.Float64s()
		for i := range w {
			if w[i] != g[i] {
				return fmt.Errorf("%s differs: %v, first at flat offset %d: want %v, got %v", what, want, i, w[i], g[i])
			}
		}
	}
	return fmt.Errorf("%s differs: want %v, got %v", what, want, got)
}

// sameValue returns an error unless want and got are equal (ObjectsAreEqual).
func sameValue(what string, want, got any) error {
	if !assert.ObjectsAreEqual(want, got) {
		return fmt.Errorf("%s differs: want %v, got %v", what, want, got)
	}
	return nil
}

// zeroResults returns an error unless got holds n zero results (every kind
// but the contiguous one returns nothing for attention).
func zeroResults(n int, got []Result) error {
	if len(got) != n {
		return fmt.Errorf("%d results for %d writes", len(got), n)
	}
	for i, g := range got {
		if !g.Key.IsZero() || !g.Value.IsZero() || !g.Mask.IsZero() || g.Parts != nil {
			return fmt.Errorf("result %d is not zero: %+v", i, g)
		}
	}
	return nil
}

// ---- contiguous (transformer) ----

// The transformer model: B 4 rows (starts 0, 2, 0, 1), S 64, 2 kv heads of
// dim 4, 3 layers, a bfloat16 cache fed float32 inputs. Step 0 is a
// 3-token prefill chunk with a query of other heads, an attention mask
// with holes and a causal mask; every fifth step writes 2 tokens with
// masks and token-type ids; the others decode one token, unmasked.
const ctB, ctS, ctH, ctD, ctL = 4, 64, 2, 4, 3

type transformerModel struct {
	refLog
	r      *rand.Rand
	meta   transformer.Metadata
	starts []int32
	steps  int
}

func newTransformerModel(r *rand.Rand) (*transformerModel, error) {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: ctB, SequenceLength: ctS, NumHiddenLayers: ctL,
		NumHeads: transformer.Ptr(ctH), HeadDim: transformer.Ptr(ctD)})
	if err != nil {
		return nil, err
	}
	m := &transformerModel{r: r, meta: meta, starts: []int32{0, 2, 0, 1}}
	c, err := transformer.Init(meta, tensor.BFloat16, slices.Clone(m.starts))
	if err != nil {
		return nil, err
	}
	views := make([]any, c.Len())
	for l := range views {
		if views[l], err = c.View(l); err != nil {
			return nil, err
		}
	}
	m.push(refVersion{views: views})
	return m, nil
}

func (m *transformerModel) spec() Spec {
	return Spec{Transformer: &TransformerSpec{Metadata: m.meta, DType: tensor.BFloat16, Starts: slices.Clone(m.starts)}}
}

func (m *transformerModel) next(context.Context, *Cache) ([]LayerWrite, error) {
	q, masked := 1, false
	switch {
	case m.steps == 0:
		q, masked = 3, true
	case m.steps%5 == 4:
		q, masked = 2, true
	}
	m.steps++
	ws := make([]LayerWrite, ctL)
	for l := range ws {
		w := &TransformerWrite{Key: coreRand(m.r, ctB, q, ctH, ctD), Value: coreRand(m.r, ctB, q, ctH, ctD)}
		if masked {
			w.Query = coreRand(m.r, ctB, q, 2*ctH, 3)
			data := make([]bool, ctB*ctS)
			for i := range data {
				data[i] = m.r.Intn(4) != 0
			}
			mask, err := transformer.NewMask([]int{ctB, ctS}, data)
			if err != nil {
				return nil, err
			}
			w.Mask = mask
			w.Options.CausalMask = transformer.CausalMask(ctS)
			if q > 1 {
				w.Options.TokenTypeIDs = make([][]int32, ctB)
				for b := range w.Options.TokenTypeIDs {
					for range q {
						w.Options.TokenTypeIDs[b] = append(w.Options.TokenTypeIDs[b], int32(m.r.Intn(3)))
					}
				}
			}
		}
		ws[l] = LayerWrite{Layer: l, Write: w}
	}
	return ws, nil
}

func (m *transformerModel) apply(ws []LayerWrite) ([]Result, error) {
	views := m.nextViews()
	out := make([]Result, len(ws))
	for i, lw := range ws {
		w, err := writeAs[*TransformerWrite](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[transformer.View](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		q := w.Query
		if q.IsZero() {
			q = w.Key
		}
		k, val, mask, next, err := v.ConcatenateToCache(q, w.Key, w.Value, w.Mask, w.Options)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
		views[lw.Layer], out[i] = next, Result{Key: k, Value: val, Mask: mask}
	}
	m.push(refVersion{views: views})
	return out, nil
}

func (m *transformerModel) check(got Version) error {
	return m.compare(got, func(_ refVersion, want, got any) error { return sameContiguous(want, got) })
}

// sameContiguous compares what two contiguous views can see: index,
// starts, metadata, layer index, and the key and value bytes of each row's
// positions below its index (the positions past it are unspecified).
func sameContiguous(want, got any) error {
	w, err := viewAs[transformer.View](want)
	if err != nil {
		return err
	}
	g, err := viewAs[transformer.View](got)
	if err != nil {
		return err
	}
	if err := sameValue("index", w.Index(), g.Index()); err != nil {
		return err
	}
	if err := sameValue("starts", w.Starts(), g.Starts()); err != nil {
		return err
	}
	if err := sameValue("metadata", w.Metadata(), g.Metadata()); err != nil {
		return err
	}
	wl, wok := w.LayerIndex()
	gl, gok := g.LayerIndex()
	if wl != gl || wok != gok {
		return fmt.Errorf("layer index %d (%v), want %d (%v)", gl, gok, wl, wok)
	}
	if err := sameVisible("key", w.Key(), g.Key(), w.Index()); err != nil {
		return err
	}
	return sameVisible("value", w.Value(), g.Value(), w.Index())
}

// sameVisible compares the bytes of two (B, S, H, D) caches at each row
// b's positions below index[b], and their dtype and shape.
func sameVisible(what string, want, got tensor.Tensor, index []int32) error {
	if want.DType() != got.DType() || !slices.Equal(want.Shape(), got.Shape()) {
		return fmt.Errorf("%s is %v %v, want %v %v", what, got.DType(), got.Shape(), want.DType(), want.Shape())
	}
	wb, err := visibleBytes(want, index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	gb, err := visibleBytes(got, index)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !slices.Equal(wb, gb) {
		return fmt.Errorf("%s: the visible bytes differ (index %v)", what, index)
	}
	return nil
}

// visibleBytes reads row b's first index[b] positions of a (B, S, H, D)
// cache, and nothing else: positions past them may be being appended in
// place by a later step.
func visibleBytes(x tensor.Tensor, index []int32) ([]byte, error) {
	if x.Rank() != 4 || x.Dim(0) != len(index) {
		return nil, fmt.Errorf("a cache of shape %v with an index of %d rows", x.Shape(), len(index))
	}
	S, row, size := x.Dim(1), x.Dim(2)*x.Dim(3), x.DType().Size()
	var out []byte
	for b, n := range index {
		buf := make([]byte, int(n)*row*size)
		if err := x.ReadBytes(buf, x.DType(), b*S*row); err != nil {
			return nil, err
		}
		out = append(out, buf...)
	}
	return out, nil
}

// checkResults compares what attention gets: the mask, and the key and
// value at the positions the published version can see.
func (m *transformerModel) checkResults(n uint64, ws []LayerWrite, want, got []Result) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d results for %d writes", len(got), len(want))
	}
	ref, err := m.at(n)
	if err != nil {
		return err
	}
	for i, lw := range ws {
		index := ref.views[lw.Layer].(transformer.View).Index()
		if !want[i].Mask.Equal(got[i].Mask) {
			return fmt.Errorf("layer %d: mask %v, want %v", lw.Layer, got[i].Mask, want[i].Mask)
		}
		if err := sameVisible(fmt.Sprintf("layer %d's key for attention", lw.Layer), want[i].Key, got[i].Key, index); err != nil {
			return err
		}
		if err := sameVisible(fmt.Sprintf("layer %d's value for attention", lw.Layer), want[i].Value, got[i].Value, index); err != nil {
			return err
		}
	}
	return nil
}

// ---- paged ----

// The paged model: 4 decode slots, 2 layers, pages of 4 tokens, sequences
// of up to 32 tokens (8 pages), 2 kv heads of dim 4, bfloat16. Slots 0 and
// 1 get whole prompts of 6 and 5 tokens at steps 0 and 1, slot 2 a 7-token
// prompt in two chunks (steps 2 and 3), slot 3 a 4-token prompt at step 6.
// Every other step decodes: each prefilled slot writes its next token with
// probability 3/4 and is inactive (-1) otherwise, and a slot whose token
// starts a new page gets one from the page manager first.
const cpSlots, cpL, cpPS, cpMax, cpH, cpD = 4, 2, 4, 32, 2, 4

// pagedSeq is a sequence as a version sees it: its page table and the
// number of tokens written.
type pagedSeq struct {
	table  []int32
	length int
}

// pagedPrefill is a scheduled prefill chunk: tokens [start, end) of a
// prompt of total tokens, into slot.
type pagedPrefill struct{ step, slot, start, end, total int }

var pagedSchedule = []pagedPrefill{{0, 0, 0, 6, 6}, {1, 1, 0, 5, 5}, {2, 2, 0, 3, 7}, {3, 2, 3, 7, 7}, {6, 3, 0, 4, 4}}

type pagedModel struct {
	refLog
	r      *rand.Rand
	meta   paged.Metadata
	pm     *pagemanager.HBMPageManager
	seqs   []pagedSeq // every slot's sequence after the writes next returned last
	prompt []int      // every slot's prompt length (0: none yet)
	steps  int
}

func newPagedModel(r *rand.Rand) (*pagedModel, error) {
	meta := paged.Metadata{BatchSize: cpSlots, NumHiddenLayers: cpL, NumPagesPerLayer: cpSlots*cpMax/cpPS + 1,
		NumPagesPerSequence: cpMax / cpPS, MaxSequences: cpMax, PageSize: cpPS, NumKVHeads: cpH, KVHeadDimSize: cpD, HBMUtilization: 0.5}
	pm, err := pagemanager.NewHBMPageManager(pagemanager.ConfigFromMetadata(meta))
	if err != nil {
		return nil, err
	}
	c, err := paged.Init(meta, tensor.BFloat16)
	if err != nil {
		return nil, err
	}
	m := &pagedModel{r: r, meta: meta, pm: pm, seqs: make([]pagedSeq, cpSlots), prompt: make([]int, cpSlots)}
	for s := range m.seqs {
		m.seqs[s].table = make([]int32, meta.NumPagesPerSequence)
	}
	views := make([]any, c.Len())
	for l := range views {
		if views[l], err = c.View(l); err != nil {
			return nil, err
		}
	}
	m.push(refVersion{views: views, seqs: m.snapshotSeqs()})
	return m, nil
}

func (m *pagedModel) spec() Spec {
	return Spec{Paged: &PagedSpec{Metadata: m.meta, DType: tensor.BFloat16}}
}

// snapshotSeqs deep-copies the slots' sequences.
func (m *pagedModel) snapshotSeqs() []pagedSeq {
	out := make([]pagedSeq, len(m.seqs))
	for s, q := range m.seqs {
		out[s] = pagedSeq{table: slices.Clone(q.table), length: q.length}
	}
	return out
}

// alloc allocates pages through the runtime's page-manager actor (prefill
// for a prompt of n tokens, or n single pages) and through the model's own
// page manager, and requires the same pages and free count from both.
func (m *pagedModel) alloc(ctx context.Context, c *Cache, prefill bool, n int) ([]int32, error) {
	var got, want []int32
	var free int
	var err error
	if prefill {
		got, free, err = c.AllocPrefillPages(ctx, n)
		if err == nil {
			want, err = m.pm.AllocPrefillHBMPages(n)
		}
	} else {
		got, free, err = c.AllocPages(ctx, n)
		if err == nil {
			want, err = m.pm.AllocHBMPages(n)
		}
	}
	if err != nil {
		return nil, err
	}
	if !slices.Equal(got, want) || free != m.pm.NumFree() {
		return nil, fmt.Errorf("the page-manager actor allocated %v (%d free), the page manager %v (%d free)", got, free, want, m.pm.NumFree())
	}
	return got, nil
}

func (m *pagedModel) next(ctx context.Context, c *Cache) ([]LayerWrite, error) {
	step := m.steps
	m.steps++
	var st paged.StepMetadata
	prefillSlot, T := -1, 0
	for _, p := range pagedSchedule {
		if p.step != step {
			continue
		}
		if p.start == 0 {
			pages, err := m.alloc(ctx, c, true, p.total)
			if err != nil {
				return nil, err
			}
			copy(m.seqs[p.slot].table, pages)
			m.prompt[p.slot] = p.total
		}
		prefillSlot, T = p.slot, p.end-p.start
		st.PrefillLength = int32(p.end)
		st.PrefillPageTable = slices.Clone(m.seqs[p.slot].table)
		if p.start > 0 { // a later chunk names its positions; the first uses the default 0..T-1
			for i := p.start; i < p.end; i++ {
				st.PrefillPosition = append(st.PrefillPosition, int32(i))
			}
		}
		m.seqs[p.slot].length = p.end
	}
	decoding := false
	positions := make([]int32, cpSlots)
	tables := make([][]int32, cpSlots)
	for s := range cpSlots {
		positions[s] = -1
		q := &m.seqs[s]
		if s != prefillSlot && m.prompt[s] > 0 && q.length >= m.prompt[s] && q.length < cpMax && m.r.Intn(4) != 0 {
			if q.length%cpPS == 0 {
				page, err := m.alloc(ctx, c, false, 1)
				if err != nil {
					return nil, err
				}
				q.table[q.length/cpPS] = page[0]
			}
			positions[s] = int32(q.length)
			q.length++
			decoding = true
		}
		tables[s] = slices.Clone(q.table)
	}
	if decoding || prefillSlot < 0 {
		st.DecodesPosition, st.DecodesPageTable = positions, tables
	}
	ws := make([]LayerWrite, cpL)
	for l := range ws {
		w := &PagedWrite{Step: st}
		if st.HasPrefill() {
			w.PrefillKey, w.PrefillValue = coreRand(m.r, T, cpH, cpD), coreRand(m.r, T, cpH, cpD)
		}
		if st.HasDecodes() {
			w.DecodeKey, w.DecodeValue = coreRand(m.r, cpSlots, cpH, cpD), coreRand(m.r, cpSlots, cpH, cpD)
		}
		ws[l] = LayerWrite{Layer: l, Write: w}
	}
	return ws, nil
}

func (m *pagedModel) apply(ws []LayerWrite) ([]Result, error) {
	views := m.nextViews()
	for _, lw := range ws {
		w, err := writeAs[*PagedWrite](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[paged.View](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		if w.Step.HasPrefill() {
			if v, err = v.WritePrefill(w.PrefillKey, w.PrefillValue, w.Step); err != nil {
				return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
			}
		}
		if w.Step.HasDecodes() {
			if v, err = v.WriteDecodes(w.DecodeKey, w.DecodeValue, w.Step); err != nil {
				return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
			}
		}
		views[lw.Layer] = v
	}
	m.push(refVersion{views: views, seqs: m.snapshotSeqs()})
	return make([]Result, len(ws)), nil
}

// check gathers every sequence the version can see from both views (Gather
// reads only the sequence's tokens, so it is safe while steps run).
func (m *pagedModel) check(got Version) error {
	return m.compare(got, func(ref refVersion, want, got any) error {
		w, err := viewAs[paged.View](want)
		if err != nil {
			return err
		}
		g, err := viewAs[paged.View](got)
		if err != nil {
			return err
		}
		if err := sameValue("metadata", w.Metadata(), g.Metadata()); err != nil {
			return err
		}
		if w.LayerIndex() != g.LayerIndex() || w.DType() != g.DType() {
			return fmt.Errorf("layer index %d, dtype %v; want %d, %v", g.LayerIndex(), g.DType(), w.LayerIndex(), w.DType())
		}
		for s, q := range ref.seqs {
			if q.length == 0 {
				continue
			}
			wk, wv, err := w.Gather(q.table, q.length)
			if err != nil {
				return fmt.Errorf("reference slot %d: %w", s, err)
			}
			gk, gv, err := g.Gather(q.table, q.length)
			if err != nil {
				return fmt.Errorf("slot %d: %w", s, err)
			}
			if err := sameTensor(fmt.Sprintf("slot %d's %d keys", s, q.length), wk, gk); err != nil {
				return err
			}
			if err := sameTensor(fmt.Sprintf("slot %d's %d values", s, q.length), wv, gv); err != nil {
				return err
			}
		}
		return nil
	})
}

func (m *pagedModel) checkResults(_ uint64, ws []LayerWrite, _, got []Result) error {
	return zeroResults(len(ws), got)
}

// ---- Mamba and Mamba2 ----

// convSSMStep returns step s's conv/SSM write of a (B, C, K) conv window
// and an SSM state of ssmShape: step 0 sets the window and the state; then
// every sixth step (from 3) shifts a column in at a random position in
// [-1, K] (clipped by the core) and leaves the state, every sixth (from 5)
// sets the window alone, and the others decode (a column at K-1 and a new
// state).
func convSSMStep(r *rand.Rand, s, B, C, K int, ssmShape ...int) ConvSSM {
	switch {
	case s == 0:
		return ConvSSM{ConvWindow: coreRand(r, B, C, K), SSMState: coreRand(r, ssmShape...)}
	case s%6 == 3:
		return ConvSSM{ConvColumn: coreRand(r, B, C), CachePosition: r.Intn(K+2) - 1}
	case s%6 == 5:
		return ConvSSM{ConvWindow: coreRand(r, B, C, K)}
	}
	return ConvSSM{ConvColumn: coreRand(r, B, C), CachePosition: K - 1, SSMState: coreRand(r, ssmShape...)}
}

// applyConvSSMCore applies w with the core's own calls: UpdateConvState
// for a column, UpdateConvStatePositions at 0..K-1 for a window,
// UpdateSSMState.
func applyConvSSMCore[V convSSMView[V]](v V, w ConvSSM) (V, error) {
	var err error
	if !w.ConvColumn.IsZero() {
		if v, err = v.UpdateConvState(w.ConvColumn, w.CachePosition); err != nil {
			return v, err
		}
	}
	if !w.ConvWindow.IsZero() {
		pos := make([]int32, w.ConvWindow.Dim(2))
		for k := range pos {
			pos[k] = int32(k)
		}
		if v, err = v.UpdateConvStatePositions(w.ConvWindow, pos); err != nil {
			return v, err
		}
	}
	if !w.SSMState.IsZero() {
		v, err = v.UpdateSSMState(w.SSMState)
	}
	return v, err
}

// The Mamba model: B 3, intermediate 6, state 4, kernel 4, 3 layers, float32.
const cmB, cmI, cmN, cmK, cmL = 3, 6, 4, 4, 3

type mambaModel struct {
	refLog
	r     *rand.Rand
	meta  mamba.Metadata
	steps int
}

func newMambaModel(r *rand.Rand) (*mambaModel, error) {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: cmL, BatchSize: cmB, IntermediateSize: cmI, SSMStateSize: cmN, ConvKernelSize: cmK})
	if err != nil {
		return nil, err
	}
	c, err := mamba.Init(meta, tensor.Float32)
	if err != nil {
		return nil, err
	}
	m := &mambaModel{r: r, meta: meta}
	views := make([]any, c.Len())
	for l := range views {
		if views[l], err = c.View(l); err != nil {
			return nil, err
		}
	}
	m.push(refVersion{views: views})
	return m, nil
}

func (m *mambaModel) spec() Spec {
	return Spec{Mamba: &MambaSpec{Metadata: m.meta, DType: tensor.Float32}}
}

func (m *mambaModel) next(context.Context, *Cache) ([]LayerWrite, error) {
	ws := make([]LayerWrite, cmL)
	for l := range ws {
		ws[l] = LayerWrite{Layer: l, Write: &MambaWrite{convSSMStep(m.r, m.steps, cmB, cmI, cmK, cmB, cmI, cmN)}}
	}
	m.steps++
	return ws, nil
}

func (m *mambaModel) apply(ws []LayerWrite) ([]Result, error) {
	views := m.nextViews()
	for _, lw := range ws {
		w, err := writeAs[*MambaWrite](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[mamba.View](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		if views[lw.Layer], err = applyConvSSMCore(v, w.ConvSSM); err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
	}
	m.push(refVersion{views: views})
	return make([]Result, len(ws)), nil
}

func (m *mambaModel) check(got Version) error {
	return m.compare(got, func(_ refVersion, want, got any) error {
		w, err := viewAs[mamba.View](want)
		if err != nil {
			return err
		}
		g, err := viewAs[mamba.View](got)
		if err != nil {
			return err
		}
		if err := sameTensor("conv states", w.ConvStates(), g.ConvStates()); err != nil {
			return err
		}
		if err := sameTensor("SSM states", w.SSMStates(), g.SSMStates()); err != nil {
			return err
		}
		if err := sameValue("positions", w.Positions(), g.Positions()); err != nil {
			return err
		}
		return sameValue("metadata", w.Metadata(), g.Metadata())
	})
}

func (m *mambaModel) checkResults(_ uint64, ws []LayerWrite, _, got []Result) error {
	return zeroResults(len(ws), got)
}

// The Mamba2 model: B 2, intermediate 8, 4 heads of dim 2, state 2, kernel
// 4, 2 groups (conv dim 16), 3 layers, bfloat16. Every step advances the
// sequence by one (AdvanceSeq 1), so a version's seqlen offset is its
// number: a marker the readers of concurrency_test.go check.
const cm2B, cm2I, cm2H, cm2P, cm2N, cm2K, cm2G, cm2L = 2, 8, 4, 2, 2, 4, 2, 3
const cm2Conv = cm2I + 2*cm2G*cm2N

type mamba2Model struct {
	refLog
	r     *rand.Rand
	meta  mamba2.Metadata
	steps int
}

func newMamba2Model(r *rand.Rand) (*mamba2Model, error) {
	meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: cm2L, BatchSize: cm2B, IntermediateSize: cm2I, NumHeads: cm2H,
		HeadDim: cm2P, StateSize: cm2N, ConvKernelSize: cm2K, NGroups: cm2G})
	if err != nil {
		return nil, err
	}
	c, err := mamba2.Init(meta, tensor.BFloat16)
	if err != nil {
		return nil, err
	}
	m := &mamba2Model{r: r, meta: meta}
	views := make([]any, c.Len())
	for l := range views {
		if views[l], err = c.View(l); err != nil {
			return nil, err
		}
	}
	m.push(refVersion{views: views})
	return m, nil
}

func (m *mamba2Model) spec() Spec {
	return Spec{Mamba2: &Mamba2Spec{Metadata: m.meta, DType: tensor.BFloat16}}
}

func (m *mamba2Model) next(context.Context, *Cache) ([]LayerWrite, error) {
	ws := make([]LayerWrite, cm2L)
	for l := range ws {
		ws[l] = LayerWrite{Layer: l, Write: &Mamba2Write{ConvSSM: convSSMStep(m.r, m.steps, cm2B, cm2Conv, cm2K, cm2B, cm2H, cm2P, cm2N), AdvanceSeq: 1}}
	}
	m.steps++
	return ws, nil
}

func (m *mamba2Model) apply(ws []LayerWrite) ([]Result, error) {
	views := m.nextViews()
	for _, lw := range ws {
		w, err := writeAs[*Mamba2Write](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[mamba2.View](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		if v, err = applyConvSSMCore(v, w.ConvSSM); err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
		if v, err = v.UpdateSeq(w.AdvanceSeq); err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
		views[lw.Layer] = v
	}
	m.push(refVersion{views: views})
	return make([]Result, len(ws)), nil
}

func (m *mamba2Model) check(got Version) error {
	return m.compare(got, func(_ refVersion, want, got any) error {
		w, err := viewAs[mamba2.View](want)
		if err != nil {
			return err
		}
		g, err := viewAs[mamba2.View](got)
		if err != nil {
			return err
		}
		if err := sameTensor("conv states", w.ConvStates(), g.ConvStates()); err != nil {
			return err
		}
		if err := sameTensor("SSM states", w.SSMStates(), g.SSMStates()); err != nil {
			return err
		}
		if err := sameValue("positions", w.Positions(), g.Positions()); err != nil {
			return err
		}
		if w.SeqlenOffset() != g.SeqlenOffset() {
			return fmt.Errorf("seqlen offset %d, want %d", g.SeqlenOffset(), w.SeqlenOffset())
		}
		return sameValue("metadata", w.Metadata(), g.Metadata())
	})
}

func (m *mamba2Model) checkResults(_ uint64, ws []LayerWrite, _, got []Result) error {
	return zeroResults(len(ws), got)
}

// ---- lightning ----

// The lightning model: B 2, 3 heads, Dk 2, Dv 3, 3 layers, float32. Every
// fifth step (from 2) replaces the state (UpdateKeyValue); the others feed
// 1 to 3 tokens through the recurrence (Update).
const clB, clH, clDk, clDv, clL = 2, 3, 2, 3, 3

var clSlopes = []float64{0.5, 0.25, 0.125}

type lightningModel struct {
	refLog
	r     *rand.Rand
	meta  lightning.Metadata
	steps int
}

func newLightningModel(r *rand.Rand) (*lightningModel, error) {
	meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(clB), NumHeads: lightning.Ptr(clH),
		KeyDim: lightning.Ptr(clDk), ValueDim: lightning.Ptr(clDv)})
	if err != nil {
		return nil, err
	}
	c, err := lightning.Init(clL, meta, tensor.Float32)
	if err != nil {
		return nil, err
	}
	m := &lightningModel{r: r, meta: meta}
	views := make([]any, c.Len())
	for l := range views {
		if views[l], err = c.View(l); err != nil {
			return nil, err
		}
	}
	m.push(refVersion{views: views})
	return m, nil
}

func (m *lightningModel) spec() Spec {
	return Spec{Lightning: &LightningSpec{Layers: clL, Metadata: m.meta, DType: tensor.Float32}}
}

func (m *lightningModel) next(context.Context, *Cache) ([]LayerWrite, error) {
	ws := make([]LayerWrite, clL)
	for l := range ws {
		w := &LightningWrite{KeyValue: coreRand(m.r, clB, clH, clDk, clDv)}
		if m.steps%5 != 2 {
			T := 1 + m.r.Intn(3)
			w = &LightningWrite{Key: coreRand(m.r, clB, clH, T, clDk), Value: coreRand(m.r, clB, clH, T, clDv), SlopeRate: clSlopes}
		}
		ws[l] = LayerWrite{Layer: l, Write: w}
	}
	m.steps++
	return ws, nil
}

func (m *lightningModel) apply(ws []LayerWrite) ([]Result, error) {
	views := m.nextViews()
	for _, lw := range ws {
		w, err := writeAs[*LightningWrite](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[lightning.View](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		if !w.KeyValue.IsZero() {
			v, err = v.UpdateKeyValue(w.KeyValue)
		} else {
			v, err = v.Update(w.Key, w.Value, w.SlopeRate)
		}
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
		views[lw.Layer] = v
	}
	m.push(refVersion{views: views})
	return make([]Result, len(ws)), nil
}

func (m *lightningModel) check(got Version) error {
	return m.compare(got, func(_ refVersion, want, got any) error {
		w, err := viewAs[lightning.View](want)
		if err != nil {
			return err
		}
		g, err := viewAs[lightning.View](got)
		if err != nil {
			return err
		}
		if w.HasKeyValue() != g.HasKeyValue() {
			return fmt.Errorf("has key_value %v, want %v", g.HasKeyValue(), w.HasKeyValue())
		}
		if err := sameTensor("key_value", w.KeyValue(), g.KeyValue()); err != nil {
			return err
		}
		return sameValue("metadata", w.Metadata(), g.Metadata())
	})
}

func (m *lightningModel) checkResults(_ uint64, ws []LayerWrite, _, got []Result) error {
	return zeroResults(len(ws), got)
}

// ---- the test ----

// TestStepsEqualTheCorePackages drives one unsharded cache of every kind
// through 12 steps of the runtime and the same writes directly through the
// core package, then requires every kept version (0..12, through
// Snapshot) to hold exactly the reference's visible bytes: a contiguous
// layer's key and value below each row's index, its index and starts; a
// paged layer's sequences as Gather reads them; a recurrent layer's whole
// states. Each step's results (for a contiguous cache the key, value and
// mask attention gets) are compared as the step returns them.
func TestStepsEqualTheCorePackages(t *testing.T) {
	const steps = 12
	for i, kind := range coreKinds {
		t.Run(kind, func(t *testing.T) {
			m, err := newCoreModel(kind, int64(1+i))
			require.NoError(t, err)
			rt, err := NewRuntime(WithHistory(steps + 1))
			require.NoError(t, err)
			t.Cleanup(func() { _ = rt.Close() })
			c, err := rt.NewCache(kind, m.spec())
			require.NoError(t, err)
			ctx := context.Background()
			for s := range uint64(steps) {
				require.NoError(t, coreStep(ctx, c, m, s))
			}

			cur, err := c.Current(ctx)
			require.NoError(t, err)
			require.Equal(t, uint64(steps), cur.Number)
			require.NoError(t, m.check(cur))
			for n := range uint64(steps + 1) {
				got, err := c.Snapshot(ctx, n)
				require.NoError(t, err)
				require.Equal(t, n, got.Number)
				require.NoError(t, m.check(got), "version %d, read back after all %d steps", n, steps)
			}

			// The comparison is not vacuous: a version whose layers 0 and 1 are
			// swapped (a mix of layers) fails it, and so does a version checked
			// as the next one. (Not for a paged cache: version n+1 only adds
			// tokens, which version n's pool may already hold past what n can
			// see, in storage the versions share.)
			for n := range uint64(steps) {
				got, err := c.Snapshot(ctx, n+1)
				require.NoError(t, err)
				got.Views[0], got.Views[1] = got.Views[1], got.Views[0]
				require.Error(t, m.check(got), "version %d with layers 0 and 1 swapped", n+1)
				if kind == "paged" {
					continue
				}
				if got, err = c.Snapshot(ctx, n); assert.NoError(t, err) {
					got.Number = n + 1
					require.Error(t, m.check(got), "version %d passes for version %d", n, n+1)
				}
			}
		})
	}
}
