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
//
// Every kind's model is a kindModel, which does the bookkeeping; a kind's
// constructor (newTransformerModel, newPagedModel, newMambaModel,
// newMamba2Model, newLightningModel) says what differs: the cache, each
// step's writes, how the core applies one, and what two views must share.

// coreKinds are the five cache kinds, and the contiguous cache stored as
// int8 and NF4 codes, in the order the tests cycle through them.
var coreKinds = []string{"transformer", "paged", "mamba", "mamba2", "lightning", "transformer-int8", "transformer-nf4"}

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
		return newTransformerModel(r, tensor.None, 0)
	case "transformer-int8":
		return newTransformerModel(r, tensor.Int8, 0)
	case "transformer-nf4":
		return newTransformerModel(r, tensor.NF4, 2)
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

// ---- the model of every kind ----

// kindModel is the coreModel of a cache whose writes are W's and whose
// views are V's. Its fields are what differs between the kinds.
type kindModel[W Write, V any] struct {
	refLog
	cacheSpec Spec
	steps     int // the number of steps next has made
	// writes returns the writes of step (0, 1, ...). c is the runtime's
	// cache, through which the paged model allocates its pages.
	writes func(ctx context.Context, c *Cache, step int) ([]LayerWrite, error)
	// update applies one layer's write to its view with the core package
	// and returns the result the step must return for it.
	update func(v V, w W) (V, Result, error)
	// same returns an error unless got holds what want, a layer of
	// reference version ref, can see.
	same func(ref refVersion, want, got V) error
	// results compares a step's results with the reference's; ref is the
	// version the step published. Nil: every result must be zero.
	results func(ref refVersion, ws []LayerWrite, want, got []Result) error
	// seqs returns the sequences the latest writes leave; nil for every
	// kind but paged.
	seqs func() []pagedSeq
}

// start records reference version 0, whose layer l < n is view(l), and
// returns m.
func (m *kindModel[W, V]) start(n int, view func(int) (V, error)) (coreModel, error) {
	views := make([]any, n)
	for l := range views {
		v, err := view(l)
		if err != nil {
			return nil, err
		}
		views[l] = v
	}
	m.push(refVersion{views: views, seqs: m.latestSeqs()})
	return m, nil
}

func (m *kindModel[W, V]) latestSeqs() []pagedSeq {
	if m.seqs == nil {
		return nil
	}
	return m.seqs()
}

func (m *kindModel[W, V]) spec() Spec { return m.cacheSpec }

func (m *kindModel[W, V]) next(ctx context.Context, c *Cache) ([]LayerWrite, error) {
	step := m.steps
	m.steps++
	return m.writes(ctx, c, step)
}

func (m *kindModel[W, V]) apply(ws []LayerWrite) ([]Result, error) {
	views := slices.Clone(m.latest().views)
	out := make([]Result, len(ws))
	for i, lw := range ws {
		w, err := writeAs[W](lw.Write)
		if err != nil {
			return nil, err
		}
		v, err := viewAs[V](views[lw.Layer])
		if err != nil {
			return nil, err
		}
		if views[lw.Layer], out[i], err = m.update(v, w); err != nil {
			return nil, fmt.Errorf("layer %d: %w", lw.Layer, err)
		}
	}
	m.push(refVersion{views: views, seqs: m.latestSeqs()})
	return out, nil
}

func (m *kindModel[W, V]) check(got Version) error {
	ref, err := m.at(got.Number)
	if err != nil {
		return err
	}
	if len(got.Views) != len(ref.views) {
		return fmt.Errorf("version %d has %d layers, want %d", got.Number, len(got.Views), len(ref.views))
	}
	for l := range ref.views {
		if err := m.sameLayer(ref, ref.views[l], got.Views[l]); err != nil {
			return fmt.Errorf("version %d, layer %d: %w", got.Number, l, err)
		}
	}
	return nil
}

// sameLayer is m.same of want, a layer of ref, and got, once both are V's.
func (m *kindModel[W, V]) sameLayer(ref refVersion, want, got any) error {
	w, err := viewAs[V](want)
	if err != nil {
		return err
	}
	g, err := viewAs[V](got)
	if err != nil {
		return err
	}
	return m.same(ref, w, g)
}

func (m *kindModel[W, V]) checkResults(n uint64, ws []LayerWrite, want, got []Result) error {
	if m.results == nil {
		return zeroResults(len(ws), got)
	}
	ref, err := m.at(n)
	if err != nil {
		return err
	}
	return m.results(ref, ws, want, got)
}

// everyLayer is the writes of a kind whose step s writes each of its n
// layers with write(s), called once per layer in layer order.
func everyLayer[W Write](n int, write func(step int) W) func(context.Context, *Cache, int) ([]LayerWrite, error) {
	return func(_ context.Context, _ *Cache, step int) ([]LayerWrite, error) {
		return layerWrites(n, func() W { return write(step) }), nil
	}
}

// viewsOnly is the same of a kind whose views can be compared without the
// reference version's sequences (every kind but paged).
func viewsOnly[V any](same func(want, got V) error) func(refVersion, V, V) error {
	return func(_ refVersion, want, got V) error { return same(want, got) }
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
// masks and token-type ids; the others decode one token, unmasked. The
// core's ConcatenateToCache gives the key, value and mask attention gets,
// which the step must return too. With quantization q the cache stores
// int8 or NF4 (block) codes and bfloat16 scales, and the core's view
// (transformer.InitStorage) must hold the same codes and scales.
const ctB, ctS, ctH, ctD, ctL = 4, 64, 2, 4, 3

func newTransformerModel(r *rand.Rand, q tensor.Quantization, block int) (coreModel, error) {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: ctB, SequenceLength: ctS, NumHiddenLayers: ctL,
		NumHeads: transformer.Ptr(ctH), HeadDim: transformer.Ptr(ctD)})
	if err != nil {
		return nil, err
	}
	starts := []int32{0, 2, 0, 1}
	st := transformer.Storage{DType: tensor.BFloat16, Quantization: q, BlockSize: block}
	c, err := transformer.InitStorage(meta, st, slices.Clone(starts))
	if err != nil {
		return nil, err
	}
	m := &kindModel[*TransformerWrite, transformer.View]{
		cacheSpec: Spec{Transformer: &TransformerSpec{Metadata: meta, DType: tensor.BFloat16, Quantization: q, BlockSize: block, Starts: starts}},
		writes: func(_ context.Context, _ *Cache, step int) ([]LayerWrite, error) {
			return transformerStepWrites(r, step)
		},
		update: func(v transformer.View, w *TransformerWrite) (transformer.View, Result, error) {
			q := w.Query
			if q.IsZero() {
				q = w.Key
			}
			k, val, mask, next, err := v.ConcatenateToCache(q, w.Key, w.Value, w.Mask, w.Options)
			return next, Result{Key: k, Value: val, Mask: mask}, err
		},
		same:    viewsOnly(sameContiguous),
		results: sameAttention,
	}
	return m.start(c.Len(), c.View)
}

// transformerStepWrites returns the transformer model's writes of step.
func transformerStepWrites(r *rand.Rand, step int) ([]LayerWrite, error) {
	q, masked := 1, false
	switch {
	case step == 0:
		q, masked = 3, true
	case step%5 == 4:
		q, masked = 2, true
	}
	ws := make([]LayerWrite, ctL)
	for l := range ws {
		w := &TransformerWrite{Key: randTensor(r, ctB, q, ctH, ctD), Value: randTensor(r, ctB, q, ctH, ctD)}
		if masked {
			w.Query = randTensor(r, ctB, q, 2*ctH, 3)
			data := make([]bool, ctB*ctS)
			for i := range data {
				data[i] = r.Intn(4) != 0
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
						w.Options.TokenTypeIDs[b] = append(w.Options.TokenTypeIDs[b], int32(r.Intn(3)))
					}
				}
			}
		}
		ws[l] = LayerWrite{Layer: l, Write: w}
	}
	return ws, nil
}

// sameContiguous compares what two contiguous views can see: storage,
// index, starts, metadata, layer index, and the key and value bytes of
// each row's positions below its index (the positions past it are
// unspecified); for quantized views also the codes and scales there.
func sameContiguous(w, g transformer.View) error {
	if err := sameValue("storage", w.Storage(), g.Storage()); err != nil {
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
	if w.IsQuantized() {
		for _, c := range []struct {
			what      string
			want, got tensor.Tensor
		}{
			{"key codes", w.KeyCodes(), g.KeyCodes()}, {"key scales", w.KeyScales(), g.KeyScales()},
			{"value codes", w.ValueCodes(), g.ValueCodes()}, {"value scales", w.ValueScales(), g.ValueScales()},
		} {
			if err := sameVisible(c.what, c.want, c.got, w.Index()); err != nil {
				return err
			}
		}
	}
	if err := sameVisible("key", w.Key(), g.Key(), w.Index()); err != nil {
		return err
	}
	return sameVisible("value", w.Value(), g.Value(), w.Index())
}

// sameVisible compares the bytes of two (B, S, H, W) caches (values, codes
// or scales) at each row b's positions below index[b], and their dtype and
// shape.
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

// sameAttention compares what attention gets: the mask, and the key and
// value at the positions the published version (ref) can see.
func sameAttention(ref refVersion, ws []LayerWrite, want, got []Result) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d results for %d writes", len(got), len(want))
	}
	for i, lw := range ws {
		v, err := viewAs[transformer.View](ref.views[lw.Layer])
		if err != nil {
			return err
		}
		index := v.Index()
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
// starts a new page gets one from the page manager first. A version is
// compared sequence by sequence, as Gather reads it.
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

// pagedSlots is the paged model's scheduler: it keeps the slots'
// sequences and its own page manager.
type pagedSlots struct {
	r      *rand.Rand
	pm     *pagemanager.HBMPageManager
	seqs   []pagedSeq // every slot's sequence after the writes of the latest step
	prompt []int      // every slot's prompt length (0: none yet)
}

func newPagedModel(r *rand.Rand) (coreModel, error) {
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
	p := &pagedSlots{r: r, pm: pm, seqs: make([]pagedSeq, cpSlots), prompt: make([]int, cpSlots)}
	for s := range p.seqs {
		p.seqs[s].table = make([]int32, meta.NumPagesPerSequence)
	}
	m := &kindModel[*PagedWrite, paged.View]{
		cacheSpec: Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.BFloat16}},
		writes:    p.writes,
		update: func(v paged.View, w *PagedWrite) (paged.View, Result, error) {
			var err error
			if w.Step.HasPrefill() {
				if v, err = v.WritePrefill(w.PrefillKey, w.PrefillValue, w.Step); err != nil {
					return v, Result{}, err
				}
			}
			if w.Step.HasDecodes() {
				v, err = v.WriteDecodes(w.DecodeKey, w.DecodeValue, w.Step)
			}
			return v, Result{}, err
		},
		same: samePagedSeqs,
		seqs: p.snapshot,
	}
	return m.start(c.Len(), c.View)
}

// snapshot deep-copies the slots' sequences.
func (p *pagedSlots) snapshot() []pagedSeq {
	out := make([]pagedSeq, len(p.seqs))
	for s, q := range p.seqs {
		out[s] = pagedSeq{table: slices.Clone(q.table), length: q.length}
	}
	return out
}

// alloc allocates pages through the runtime's page-manager actor (prefill
// for a prompt of n tokens, or n single pages) and through the model's own
// page manager, and requires the same pages and free count from both.
func (p *pagedSlots) alloc(ctx context.Context, c *Cache, prefill bool, n int) ([]int32, error) {
	var got, want []int32
	var free int
	var err error
	if prefill {
		got, free, err = c.AllocPrefillPages(ctx, n)
		if err == nil {
			want, err = p.pm.AllocPrefillHBMPages(n)
		}
	} else {
		got, free, err = c.AllocPages(ctx, n)
		if err == nil {
			want, err = p.pm.AllocHBMPages(n)
		}
	}
	if err != nil {
		return nil, err
	}
	if !slices.Equal(got, want) || free != p.pm.NumFree() {
		return nil, fmt.Errorf("the page-manager actor allocated %v (%d free), the page manager %v (%d free)", got, free, want, p.pm.NumFree())
	}
	return got, nil
}

// writes returns the writes of step: the scheduled prefill chunk, if any,
// and a decode of every other prefilled slot that is active.
func (p *pagedSlots) writes(ctx context.Context, c *Cache, step int) ([]LayerWrite, error) {
	var st paged.StepMetadata
	prefillSlot, T := -1, 0
	for _, pf := range pagedSchedule {
		if pf.step != step {
			continue
		}
		if pf.start == 0 {
			pages, err := p.alloc(ctx, c, true, pf.total)
			if err != nil {
				return nil, err
			}
			copy(p.seqs[pf.slot].table, pages)
			p.prompt[pf.slot] = pf.total
		}
		prefillSlot, T = pf.slot, pf.end-pf.start
		st.PrefillLength = int32(pf.end)
		st.PrefillPageTable = slices.Clone(p.seqs[pf.slot].table)
		if pf.start > 0 { // a later chunk names its positions; the first uses the default 0..T-1
			for i := pf.start; i < pf.end; i++ {
				st.PrefillPosition = append(st.PrefillPosition, int32(i))
			}
		}
		p.seqs[pf.slot].length = pf.end
	}
	decoding := false
	positions := make([]int32, cpSlots)
	tables := make([][]int32, cpSlots)
	for s := range cpSlots {
		positions[s] = -1
		q := &p.seqs[s]
		if s != prefillSlot && p.prompt[s] > 0 && q.length >= p.prompt[s] && q.length < cpMax && p.r.Intn(4) != 0 {
			if q.length%cpPS == 0 {
				page, err := p.alloc(ctx, c, false, 1)
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
	return layerWrites(cpL, func() *PagedWrite {
		w := &PagedWrite{Step: st}
		if st.HasPrefill() {
			w.PrefillKey, w.PrefillValue = randTensor(p.r, T, cpH, cpD), randTensor(p.r, T, cpH, cpD)
		}
		if st.HasDecodes() {
			w.DecodeKey, w.DecodeValue = randTensor(p.r, cpSlots, cpH, cpD), randTensor(p.r, cpSlots, cpH, cpD)
		}
		return w
	}), nil
}

// samePagedSeqs gathers every sequence reference version ref can see from
// both views (Gather reads only the sequence's tokens, so it is safe while
// steps run), and compares their metadata, layer index and dtype.
func samePagedSeqs(ref refVersion, w, g paged.View) error {
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
		return ConvSSM{ConvWindow: randTensor(r, B, C, K), SSMState: randTensor(r, ssmShape...)}
	case s%6 == 3:
		return ConvSSM{ConvColumn: randTensor(r, B, C), CachePosition: r.Intn(K+2) - 1}
	case s%6 == 5:
		return ConvSSM{ConvWindow: randTensor(r, B, C, K)}
	}
	return ConvSSM{ConvColumn: randTensor(r, B, C), CachePosition: K - 1, SSMState: randTensor(r, ssmShape...)}
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

// convSSMStates is what a Mamba and a Mamba2 view both show.
type convSSMStates interface {
	ConvStates() tensor.Tensor
	SSMStates() tensor.Tensor
	Positions() []int32
}

// sameConvSSMStates compares the conv and SSM states and the positions of
// two Mamba or two Mamba2 views.
func sameConvSSMStates(w, g convSSMStates) error {
	if err := sameTensor("conv states", w.ConvStates(), g.ConvStates()); err != nil {
		return err
	}
	if err := sameTensor("SSM states", w.SSMStates(), g.SSMStates()); err != nil {
		return err
	}
	return sameValue("positions", w.Positions(), g.Positions())
}

// The Mamba model: B 3, intermediate 6, state 4, kernel 4, 3 layers,
// float32; every layer gets convSSMStep's write.
const cmB, cmI, cmN, cmK, cmL = 3, 6, 4, 4, 3

func newMambaModel(r *rand.Rand) (coreModel, error) {
	meta, err := mamba.NewMetadata(mamba.MetadataConfig{NumHiddenLayers: cmL, BatchSize: cmB, IntermediateSize: cmI, SSMStateSize: cmN, ConvKernelSize: cmK})
	if err != nil {
		return nil, err
	}
	c, err := mamba.Init(meta, tensor.Float32)
	if err != nil {
		return nil, err
	}
	m := &kindModel[*MambaWrite, mamba.View]{
		cacheSpec: Spec{Mamba: &MambaSpec{Metadata: meta, DType: tensor.Float32}},
		writes: everyLayer(cmL, func(step int) *MambaWrite {
			return &MambaWrite{convSSMStep(r, step, cmB, cmI, cmK, cmB, cmI, cmN)}
		}),
		update: func(v mamba.View, w *MambaWrite) (mamba.View, Result, error) {
			v, err := applyConvSSMCore(v, w.ConvSSM)
			return v, Result{}, err
		},
		same: viewsOnly(sameMamba),
	}
	return m.start(c.Len(), c.View)
}

// sameMamba compares two Mamba views' states, positions and metadata.
func sameMamba(w, g mamba.View) error {
	if err := sameConvSSMStates(w, g); err != nil {
		return err
	}
	return sameValue("metadata", w.Metadata(), g.Metadata())
}

// The Mamba2 model: B 2, intermediate 8, 4 heads of dim 2, state 2, kernel
// 4, 2 groups (conv dim 16), 3 layers, bfloat16. Every layer gets
// convSSMStep's write and advances the sequence by one (AdvanceSeq 1), so
// a version's seqlen offset is its number: a marker the readers of
// concurrency_test.go check.
const cm2B, cm2I, cm2H, cm2P, cm2N, cm2K, cm2G, cm2L = 2, 8, 4, 2, 2, 4, 2, 3
const cm2Conv = cm2I + 2*cm2G*cm2N

func newMamba2Model(r *rand.Rand) (coreModel, error) {
	meta, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: cm2L, BatchSize: cm2B, IntermediateSize: cm2I, NumHeads: cm2H,
		HeadDim: cm2P, StateSize: cm2N, ConvKernelSize: cm2K, NGroups: cm2G})
	if err != nil {
		return nil, err
	}
	c, err := mamba2.Init(meta, tensor.BFloat16)
	if err != nil {
		return nil, err
	}
	m := &kindModel[*Mamba2Write, mamba2.View]{
		cacheSpec: Spec{Mamba2: &Mamba2Spec{Metadata: meta, DType: tensor.BFloat16}},
		writes: everyLayer(cm2L, func(step int) *Mamba2Write {
			return &Mamba2Write{ConvSSM: convSSMStep(r, step, cm2B, cm2Conv, cm2K, cm2B, cm2H, cm2P, cm2N), AdvanceSeq: 1}
		}),
		update: func(v mamba2.View, w *Mamba2Write) (mamba2.View, Result, error) {
			v, err := applyConvSSMCore(v, w.ConvSSM)
			if err == nil {
				v, err = v.UpdateSeq(w.AdvanceSeq)
			}
			return v, Result{}, err
		},
		same: viewsOnly(sameMamba2),
	}
	return m.start(c.Len(), c.View)
}

// sameMamba2 compares two Mamba2 views' states, positions, seqlen offsets
// and metadata.
func sameMamba2(w, g mamba2.View) error {
	if err := sameConvSSMStates(w, g); err != nil {
		return err
	}
	if w.SeqlenOffset() != g.SeqlenOffset() {
		return fmt.Errorf("seqlen offset %d, want %d", g.SeqlenOffset(), w.SeqlenOffset())
	}
	return sameValue("metadata", w.Metadata(), g.Metadata())
}

// ---- lightning ----

// The lightning model: B 2, 3 heads, Dk 2, Dv 3, 3 layers, float32. Every
// fifth step (from 2) replaces the state (UpdateKeyValue); the others feed
// 1 to 3 tokens through the recurrence (Update).
const clB, clH, clDk, clDv, clL = 2, 3, 2, 3, 3

var clSlopes = []float64{0.5, 0.25, 0.125}

func newLightningModel(r *rand.Rand) (coreModel, error) {
	meta, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: lightning.Ptr(clB), NumHeads: lightning.Ptr(clH),
		KeyDim: lightning.Ptr(clDk), ValueDim: lightning.Ptr(clDv)})
	if err != nil {
		return nil, err
	}
	c, err := lightning.Init(clL, meta, tensor.Float32)
	if err != nil {
		return nil, err
	}
	m := &kindModel[*LightningWrite, lightning.View]{
		cacheSpec: Spec{Lightning: &LightningSpec{Layers: clL, Metadata: meta, DType: tensor.Float32}},
		writes: everyLayer(clL, func(step int) *LightningWrite {
			if step%5 == 2 {
				return &LightningWrite{KeyValue: randTensor(r, clB, clH, clDk, clDv)}
			}
			T := 1 + r.Intn(3)
			return &LightningWrite{Key: randTensor(r, clB, clH, T, clDk), Value: randTensor(r, clB, clH, T, clDv), SlopeRate: clSlopes}
		}),
		update: func(v lightning.View, w *LightningWrite) (lightning.View, Result, error) {
			if !w.KeyValue.IsZero() {
				v, err := v.UpdateKeyValue(w.KeyValue)
				return v, Result{}, err
			}
			v, err := v.Update(w.Key, w.Value, w.SlopeRate)
			return v, Result{}, err
		},
		same: viewsOnly(sameLightning),
	}
	return m.start(c.Len(), c.View)
}

// sameLightning compares two lightning views' states and metadata.
func sameLightning(w, g lightning.View) error {
	if w.HasKeyValue() != g.HasKeyValue() {
		return fmt.Errorf("has key_value %v, want %v", g.HasKeyValue(), w.HasKeyValue())
	}
	if err := sameTensor("key_value", w.KeyValue(), g.KeyValue()); err != nil {
		return err
	}
	return sameValue("metadata", w.Metadata(), g.Metadata())
}

// ---- the test ----

// newModelCache returns the model of a cache of kind whose writes are
// drawn from seed, and that cache, on a new runtime that keeps the
// versions of the given number of steps and version 0.
func newModelCache(t *testing.T, kind string, seed int64, steps int) (coreModel, *Cache) {
	t.Helper()
	m, err := newCoreModel(kind, seed)
	require.NoError(t, err)
	c, err := newRuntime(t, WithHistory(steps+1)).NewCache(kind, m.spec())
	require.NoError(t, err)
	return m, c
}

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
			m, c := newModelCache(t, kind, int64(1+i), steps)
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

// TestQuantizedTransformerEqualsTheCore drives a contiguous cache stored
// as int8 or NF4 codes through 12 steps, unsharded and cut over dp × tp
// meshes (kv heads over tp), and the same writes directly through
// transformer.View.ConcatenateToCache on a view of the same storage: every
// kept version's layers (a sharded cache's joined by Version.Layer) must
// hold the reference's storage, index and starts, and its codes and
// scales byte for byte at the positions the version can see.
func TestQuantizedTransformerEqualsTheCore(t *testing.T) {
	const steps = 12
	for i, kind := range []string{"transformer-int8", "transformer-nf4"} {
		for _, ms := range []struct{ dp, tp int }{{1, 1}, {1, 2}, {2, 2}} {
			t.Run(fmt.Sprintf("%s/dp=%d/tp=%d", kind, ms.dp, ms.tp), func(t *testing.T) {
				m, err := newCoreModel(kind, int64(300+i))
				require.NoError(t, err)
				spec := m.spec()
				mesh := testMesh(t, ms.dp, ms.tp)
				spec.Mesh, spec.PartitionAxis = &mesh, kvHeadsOverTP()
				c, err := newRuntime(t, WithHistory(steps+1)).NewCache(kind, spec)
				require.NoError(t, err)
				ctx := context.Background()
				for s := range uint64(steps) {
					ws, err := m.next(ctx, c)
					require.NoError(t, err)
					want, err := m.apply(ws)
					require.NoError(t, err)
					v, got, err := c.Step(ctx, s, ws)
					require.NoError(t, err)
					require.Equal(t, s+1, v)
					if mesh.NumDevices() == 1 {
						require.NoError(t, m.checkResults(v, ws, want, got))
					}
				}
				for n := range uint64(steps + 1) {
					got, err := c.Snapshot(ctx, n)
					require.NoError(t, err)
					for l := range got.Views {
						_, isSharded := got.Views[l].(*Sharded)
						require.Equal(t, mesh.NumDevices() > 1, isSharded)
						got.Views[l], err = got.Layer(l)
						require.NoError(t, err, "version %d layer %d", n, l)
						require.True(t, got.Views[l].(transformer.View).IsQuantized(), "version %d layer %d", n, l)
					}
					require.NoError(t, m.check(got), "version %d", n)
				}
			})
		}
	}
}
