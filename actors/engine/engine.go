package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// ErrInternal reports a broken invariant of the engine itself (a bug), such
// as a prefix hit the pool reports differently from the engine's mirror of
// its keys, or a scheduler that cannot make progress.
var ErrInternal = errors.New("engine: internal error")

// request is one turn of a conversation, from arrival to its last token.
type request struct {
	id      int
	conv    *conversation
	turn    int
	prompt  []int32
	maxOut  int
	arrival int
	tokens  []int32 // the prompt and every token generated so far

	// While running.
	seq      pagemanager.SeqID // the pool's sequence of the current admission
	slot     int
	computed int     // tokens whose keys, values and states are in the caches
	pages    []int32 // the pool's block table
	restore  *reference.RecurrentState

	keys      []pagemanager.Key // chain keys of the full pages of tokens
	preempted int
	hitTokens int
	finished  int // the step it finished in
}

func (r *request) generated() int { return len(r.tokens) - len(r.prompt) }

// work is one sequence's part of a step: n tokens from position start.
type work struct {
	r        *request
	start, n int
}

// engine is one run's state.
type engine struct {
	cfg   Config
	model *reference.Hybrid
	meta  reference.HybridMetadata
	ps    int
	pad   int // page-table length (NumPagesPerSequence)

	rt         Backend
	kv, m2, lt Cache
	m2Zero     []any // version 0's views, served by FaultRecurrentReset
	ltZero     []any

	// The prefix cache as the pool's KV events describe it, and the
	// recurrent-state checkpoint of each cached page boundary.
	evMu   sync.Mutex
	events []pagemanager.Event
	sub    *pagemanager.Subscriber
	cached map[pagemanager.Key]struct{}
	ckpts  map[pagemanager.Key]*reference.RecurrentState

	requests  []*request
	pending   []*request // not yet arrived, by arrival step then id
	waiting   []*request
	running   []*request // in admission order
	freeSlots []int
	nextSeq   pagemanager.SeqID
	step      int
	finished  int

	unsubscribe func()
	rtTime      time.Duration // time spent in runtime calls in the current step
	st          stats
}

// stats are a run's counters.
type stats struct {
	steps, admissions, preemptions int
	admittedTokens, hitTokens      int
	attnHitTokens, computedTokens  int
	evictions, deferrals           int
	tokensOut, peakPages           int
	runtime, compute               []time.Duration
	utilization                    []float64
	maxRunning                     int
}

// Run serves cfg's workload on a fresh embedded runtime and returns the
// report. It fails with an error wrapping ErrConfig or ErrDoesNotFit for a
// bad configuration, and ErrVerify (with the report) when a verified
// request's tokens differ from the full recompute.
func Run(ctx context.Context, cfg Config) (Report, error) {
	_, rep, err := run(ctx, cfg)
	return rep, err
}

// run is Run, also returning the engine's final state for tests.
func run(ctx context.Context, cfg Config) (*engine, Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, Report{}, err
	}
	rt, err := actors.NewRuntime()
	if err != nil {
		return nil, Report{}, err
	}
	defer rt.Close()
	return runOn(ctx, cfg, Embedded(rt))
}

// RunWith serves cfg's workload through backend b (e.g. Clustered) and
// returns the report, as Run does; b's caches "kv", "mamba2" and
// "lightning" are created afresh.
func RunWith(ctx context.Context, cfg Config, b Backend) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	_, rep, err := runOn(ctx, cfg, b)
	return rep, err
}

// runOn is RunWith, also returning the engine's final state for tests.
func runOn(ctx context.Context, cfg Config, rt Backend) (*engine, Report, error) {
	e, err := newEngine(cfg, rt)
	if err != nil {
		return nil, Report{}, err
	}
	err = e.start(ctx)
	if e.unsubscribe != nil {
		defer e.unsubscribe()
	}
	if err != nil {
		return nil, Report{}, err
	}
	began := time.Now()
	if err := e.serve(ctx); err != nil {
		return nil, Report{}, err
	}
	elapsed := time.Since(began)
	if cfg.Snapshot != nil {
		if err := e.snapshot(ctx); err != nil {
			return nil, Report{}, err
		}
	}
	held := len(e.ckpts)
	free, err := e.freePagesAtEnd(ctx) // evicts every cached page
	if err != nil {
		return nil, Report{}, err
	}
	rep := e.report(elapsed, free)
	rep.Checkpoints = held
	if cfg.Verify > 0 {
		v := verify(ctx, e.model, e.requests, cfg.Verify)
		rep.Verify, rep.Verified = &v, v.Passed
		if !rep.Verified {
			return e, rep, fmt.Errorf("%w: %s", ErrVerify, rep.Verify.Summary())
		}
	}
	return e, rep, nil
}

// newEngine returns an engine for a valid cfg on runtime rt, before start.
func newEngine(cfg Config, rt Backend) (*engine, error) {
	model, err := reference.NewHybrid(cfg.Model)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s := cfg.Scheduler
	meta, err := model.CacheMetadata(s.Slots, s.Pages+1, s.PageSize, cfg.Workload.MaxSequence())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &engine{cfg: cfg, model: model, meta: meta, ps: s.PageSize, pad: meta.Paged.NumPagesPerSequence, rt: rt,
		sub: pagemanager.NewSubscriber(1), cached: map[pagemanager.Key]struct{}{}, ckpts: map[pagemanager.Key]*reference.RecurrentState{},
		nextSeq: 1}, nil
}

// start creates the caches and subscribes to the pool's KV events.
func (e *engine) start(ctx context.Context) error {
	es := e.rt.EventStream()
	sub := es.Subscribe(func(ev any) {
		if kv, ok := ev.(*actors.KVEvent); ok && kv.Cache == "kv" {
			e.evMu.Lock()
			e.events = append(e.events, kv.Event)
			e.evMu.Unlock()
		}
	})
	e.unsubscribe = func() { es.Unsubscribe(sub) }
	pc := e.cfg.Scheduler.PrefixCaching
	var err error
	if e.kv, err = e.rt.NewCache("kv", actors.Spec{Paged: &actors.PagedSpec{Metadata: *e.meta.Paged, DType: tensor.Float64,
		Pool: &pagemanager.PoolConfig{PrefixCaching: pc, Events: pc, Eviction: e.cfg.Scheduler.Eviction}}}); err != nil {
		return err
	}
	if e.meta.Mamba2 != nil {
		if e.m2, err = e.rt.NewCache("mamba2", actors.Spec{Mamba2: &actors.Mamba2Spec{Metadata: *e.meta.Mamba2, DType: tensor.Float64}}); err != nil {
			return err
		}
		v, err := e.m2.Current(ctx)
		if err != nil {
			return err
		}
		e.m2Zero = v.Views
	}
	if e.meta.Lightning != nil {
		if e.lt, err = e.rt.NewCache("lightning", actors.Spec{Lightning: &actors.LightningSpec{Layers: e.meta.LightningLayers,
			Metadata: *e.meta.Lightning, DType: tensor.Float64}}); err != nil {
			return err
		}
		v, err := e.lt.Current(ctx)
		if err != nil {
			return err
		}
		e.ltZero = v.Views
	}
	for i := range e.cfg.Scheduler.Slots {
		e.freeSlots = append(e.freeSlots, e.cfg.Scheduler.Slots-1-i)
	}
	convs := plan(e.cfg.Workload, e.cfg.Model.Vocab)
	for i := range convs {
		e.addRequest(&convs[i], 0, nil, convs[i].arrival)
	}
	return nil
}

// addRequest creates turn t of conversation c, whose prompt follows the
// tokens of the previous turn (nil for the first), arriving at step at.
func (e *engine) addRequest(c *conversation, t int, previous []int32, at int) {
	var prompt []int32
	if t == 0 {
		prompt = slices.Concat(c.system, c.turns[t].user)
	} else {
		prompt = slices.Concat(previous, c.turns[t].user)
	}
	r := &request{id: len(e.requests), conv: c, turn: t, prompt: prompt, maxOut: c.turns[t].output, arrival: at,
		tokens: slices.Clone(prompt)}
	e.requests = append(e.requests, r)
	i := sort.Search(len(e.pending), func(i int) bool { return e.pending[i].arrival > at })
	e.pending = slices.Insert(e.pending, i, r)
}

// timed runs f and counts its duration as runtime time of the step.
func (e *engine) timed(f func() error) error {
	t0 := time.Now()
	err := f()
	e.rtTime += time.Since(t0)
	return err
}

// syncEvents applies the KV events the pool published (synchronously,
// before its reply) to the mirror of its keys, and drops the checkpoints of
// keys that left the cache.
func (e *engine) syncEvents() error {
	e.evMu.Lock()
	evs := e.events
	e.events = nil
	e.evMu.Unlock()
	for _, ev := range evs {
		if err := e.sub.Observe(ev); err != nil {
			return fmt.Errorf("%w: %w", ErrInternal, err)
		}
		switch ev := ev.(type) {
		case pagemanager.BlockStored:
			for _, k := range ev.Hashes {
				e.cached[k] = struct{}{}
			}
		case pagemanager.BlockRemoved:
			for _, k := range ev.Hashes {
				delete(e.cached, k)
				delete(e.ckpts, k)
			}
		case pagemanager.AllBlocksCleared:
			clear(e.cached)
			clear(e.ckpts)
		}
	}
	return nil
}

// serve runs steps until every request has finished.
func (e *engine) serve(ctx context.Context) error {
	total := e.cfg.Workload.Requests
	for e.finished < total {
		if err := ctx.Err(); err != nil {
			return err
		}
		for len(e.pending) > 0 && e.pending[0].arrival <= e.step {
			e.waiting = append(e.waiting, e.pending[0])
			e.pending = e.pending[1:]
		}
		if len(e.running) == 0 && len(e.waiting) == 0 {
			if len(e.pending) == 0 {
				return fmt.Errorf("%w: %d of %d requests finished and none is left", ErrInternal, e.finished, total)
			}
			e.step = e.pending[0].arrival // idle until the next arrival
			continue
		}
		e.rtTime = 0
		t0 := time.Now()
		ws, err := e.schedule(ctx)
		if err != nil {
			return err
		}
		if len(ws) == 0 {
			return fmt.Errorf("%w: step %d schedules nothing (%d running, %d waiting, %d slots free)", ErrInternal, e.step,
				len(e.running), len(e.waiting), len(e.freeSlots))
		}
		e.recordPages()
		res, err := e.execute(ctx, ws)
		if err != nil {
			return fmt.Errorf("step %d: %w", e.step, err)
		}
		if err := e.advance(ctx, ws, res); err != nil {
			return fmt.Errorf("step %d: %w", e.step, err)
		}
		wall := time.Since(t0)
		e.st.runtime = append(e.st.runtime, e.rtTime)
		e.st.compute = append(e.st.compute, wall-e.rtTime)
		e.st.steps++
		e.step++
		if e.cfg.Progress != nil {
			e.cfg.Progress(Progress{Step: e.st.steps, Finished: e.finished, Requests: total, Running: len(e.running),
				Waiting: len(e.waiting), TokensOut: e.st.tokensOut, PagesUsed: e.usedPages(), Pages: e.cfg.Scheduler.Pages})
		}
	}
	return nil
}

// schedule picks the step's work: every running sequence in admission
// order gets its decode token or its next prefill chunk while the token
// budget lasts, preempting the latest admitted sequences when pages run
// out; then waiting requests are admitted while slots and budget remain.
func (e *engine) schedule(ctx context.Context) ([]work, error) {
	budget := e.cfg.Scheduler.TokenBudget
	var ws []work
	for i := 0; i < len(e.running) && budget > 0; i++ {
		r := e.running[i]
		n := min(len(r.tokens)-r.computed, budget)
		ok, err := e.reserve(ctx, r, n)
		if err != nil {
			return nil, err
		}
		if !ok { // r itself was preempted: it was the last one
			break
		}
		ws = append(ws, work{r: r, start: r.computed, n: n})
		budget -= n
	}
	return e.admit(ctx, ws, budget)
}

// reserve appends n tokens of running sequence r to the pool, preempting
// the latest admitted sequences (r included, last) while pages run out.
// It reports false when r itself was preempted.
func (e *engine) reserve(ctx context.Context, r *request, n int) (bool, error) {
	for {
		var st pagemanager.Step
		var pages []int32
		err := e.timed(func() (err error) {
			st, pages, err = e.kv.AppendTokens(ctx, r.seq, r.tokens[r.computed:r.computed+n])
			return err
		})
		if serr := e.syncEvents(); serr != nil {
			return false, serr
		}
		if err == nil {
			if len(st.Copies) > 0 {
				return false, fmt.Errorf("%w: sequence %d got copies %v without a fork", ErrInternal, r.seq, st.Copies)
			}
			r.pages = pages
			e.st.evictions += st.Evicted
			return true, nil
		}
		if !errors.Is(err, pagemanager.ErrNoFreePages) {
			return false, err
		}
		victim := e.running[len(e.running)-1]
		if err := e.preempt(ctx, victim); err != nil {
			return false, err
		}
		if victim == r {
			return false, nil
		}
	}
}

// preempt frees a running sequence's pages and slot and puts it first in
// the waiting queue: it will be recomputed (from its cached prefix, if
// any) with every token generated so far as its prompt.
func (e *engine) preempt(ctx context.Context, r *request) error {
	if err := e.timed(func() error { return e.kv.FreeSequence(ctx, r.seq) }); err != nil {
		return err
	}
	if err := e.syncEvents(); err != nil {
		return err
	}
	e.running = slices.DeleteFunc(e.running, func(x *request) bool { return x == r })
	e.freeSlots = append(e.freeSlots, r.slot)
	r.seq, r.computed, r.pages, r.restore = 0, 0, nil, nil
	r.preempted++
	e.st.preemptions++
	e.waiting = slices.Insert(e.waiting, 0, r)
	return nil
}

// ensureKeys extends r's chain keys to the full pages of its first n tokens.
func (e *engine) ensureKeys(r *request, n int) {
	for len(r.keys) < n/e.ps {
		parent := pagemanager.RootKey
		if len(r.keys) > 0 {
			parent = r.keys[len(r.keys)-1]
		}
		i := len(r.keys)
		r.keys = append(r.keys, pagemanager.HashPage(parent, r.tokens[i*e.ps:(i+1)*e.ps], nil))
	}
}

// inflight returns the keys of the pages running sequences have registered
// or will register but not computed yet: no request may hit those.
func (e *engine) inflight() map[pagemanager.Key]bool {
	in := map[pagemanager.Key]bool{}
	for _, r := range e.running {
		e.ensureKeys(r, len(r.tokens))
		for _, k := range r.keys[r.computed/e.ps:] {
			in[k] = true
		}
	}
	return in
}

// lookup returns the longest prefix of r's tokens whose pages are cached
// and computed (attn), at most all but its last token, and the part of it
// the engine can serve (hit): all of it for an attention-only model; for a
// hybrid model, up to the last page boundary with a recurrent checkpoint.
func (e *engine) lookup(r *request, inflight map[pagemanager.Key]bool) (attn, hit int) {
	if !e.cfg.Scheduler.PrefixCaching {
		return 0, 0
	}
	e.ensureKeys(r, len(r.tokens))
	limit := (len(r.tokens) - 1) / e.ps
	n := 0
	for n < limit {
		k := r.keys[n]
		if _, ok := e.cached[k]; !ok || inflight[k] {
			break
		}
		n++
	}
	h := n
	if e.model.RecurrentLayers() > 0 {
		for h > 0 && e.ckpts[r.keys[h-1]] == nil {
			h--
		}
	}
	return n * e.ps, h * e.ps
}

// admit admits waiting requests, in order, while slots and budget remain
// and the pool has pages. A request whose next page another running
// sequence is computing right now waits for it (its pages then come from
// the cache) and lets later requests go first.
func (e *engine) admit(ctx context.Context, ws []work, budget int) ([]work, error) {
	if budget == 0 || len(e.freeSlots) == 0 || len(e.waiting) == 0 {
		return ws, nil
	}
	inflight := e.inflight()
	for j := 0; j < len(e.waiting) && budget > 0 && len(e.freeSlots) > 0; {
		r := e.waiting[j]
		attn, hit := e.lookup(r, inflight)
		if next := attn / e.ps; e.cfg.Scheduler.PrefixCaching && next < len(r.keys) && inflight[r.keys[next]] {
			e.st.deferrals++
			j++
			continue
		}
		n := min(len(r.tokens)-hit, budget)
		seq := e.nextSeq
		var st pagemanager.Step
		var pages []int32
		err := e.timed(func() (err error) {
			st, pages, err = e.kv.AddSequence(ctx, seq, pagemanager.Request{Tokens: r.tokens[:hit+n], Recompute: n})
			return err
		})
		if serr := e.syncEvents(); serr != nil {
			return nil, serr
		}
		if errors.Is(err, pagemanager.ErrNoFreePages) {
			break // wait for pages; running sequences are never preempted for a new one
		}
		if err != nil {
			return nil, err
		}
		if st.HitTokens != hit {
			return nil, fmt.Errorf("%w: request %d: the pool hit %d tokens, the engine expected %d", ErrInternal, r.id, st.HitTokens, hit)
		}
		e.nextSeq++
		e.waiting = slices.Delete(e.waiting, j, j+1)
		r.seq, r.pages, r.computed = seq, pages, hit
		r.slot, e.freeSlots = e.freeSlots[len(e.freeSlots)-1], e.freeSlots[:len(e.freeSlots)-1]
		r.restore = nil
		if hit > 0 && e.model.RecurrentLayers() > 0 {
			r.restore = e.ckpts[r.keys[hit/e.ps-1]]
		}
		r.hitTokens += hit
		e.running = append(e.running, r)
		e.st.admissions++
		e.st.admittedTokens += len(r.tokens)
		e.st.hitTokens += hit
		e.st.attnHitTokens += attn
		e.st.evictions += st.Evicted
		for _, k := range r.keys[hit/e.ps:] {
			inflight[k] = true
		}
		ws = append(ws, work{r: r, start: hit, n: n})
		budget -= n
	}
	return ws, nil
}

// usedPages returns the number of distinct pages running sequences hold.
func (e *engine) usedPages() int {
	seen := map[int32]struct{}{}
	for _, r := range e.running {
		for _, p := range r.pages {
			seen[p] = struct{}{}
		}
	}
	return len(seen)
}

func (e *engine) recordPages() {
	used := e.usedPages()
	e.st.peakPages = max(e.st.peakPages, used)
	e.st.maxRunning = max(e.st.maxRunning, len(e.running))
	e.st.utilization = append(e.st.utilization, float64(used)/float64(e.cfg.Scheduler.Pages))
}

// execute computes the step's work through one transaction per cache: the
// model writes every layer and reads what it wrote, then all of them
// commit. On an error every open transaction is aborted.
func (e *engine) execute(ctx context.Context, ws []work) ([]reference.StepResult, error) {
	caches := []Cache{e.kv, e.m2, e.lt}
	txns := make([]Txn, len(caches))
	views := make([][]any, len(caches))
	abort := func() {
		for _, t := range txns {
			if t != nil {
				_ = e.timed(func() error { return t.Abort(ctx) })
			}
		}
	}
	for i, c := range caches {
		if c == nil {
			continue
		}
		err := e.timed(func() error {
			v, err := c.Current(ctx)
			if err != nil {
				return err
			}
			views[i] = v.Views
			txns[i], err = c.Begin(ctx, v.Number)
			return err
		})
		if err != nil {
			abort()
			return nil, err
		}
	}
	io := &txnIO{e: e, ctx: ctx, kv: txns[0], m2: txns[1], lt: txns[2], m2Views: views[1], ltViews: views[2]}
	if e.cfg.Fault == FaultRecurrentReset {
		io.m2Views, io.ltViews = e.m2Zero, e.ltZero
	}
	every := 0
	if e.cfg.Scheduler.PrefixCaching && e.model.RecurrentLayers() > 0 {
		every = e.ps
	}
	rows := make([]reference.StepRow, len(ws))
	for i, w := range ws {
		r := w.r
		pt := make([]int32, e.pad)
		copy(pt, r.pages)
		rows[i] = reference.StepRow{Slot: r.slot, Tokens: r.tokens[w.start : w.start+w.n], Start: w.start, PageTable: pt,
			Restore: r.restore, CheckpointEvery: every}
		r.restore = nil
		e.st.computedTokens += w.n
	}
	res, err := e.model.Step(rows, io)
	if err != nil {
		abort()
		return nil, err
	}
	for i, t := range txns {
		if t == nil {
			continue
		}
		err := e.timed(func() error { _, err := t.Commit(ctx); return err })
		txns[i] = nil
		if err != nil {
			abort()
			return nil, err
		}
	}
	return res, nil
}

// advance books the step's results: computed tokens, checkpoints at the
// page boundaries crossed, generated tokens, and finished requests (whose
// pages go back to the pool and whose next turn is planned).
func (e *engine) advance(ctx context.Context, ws []work, res []reference.StepResult) error {
	for i, w := range ws {
		r := w.r
		r.computed += w.n
		e.ensureKeys(r, r.computed)
		for _, ck := range res[i].Checkpoints {
			k := r.keys[ck.Tokens/e.ps-1]
			if _, ok := e.cached[k]; ok && e.ckpts[k] == nil {
				state := ck.State
				e.ckpts[k] = &state
			}
		}
		if r.computed < len(r.tokens) {
			continue
		}
		r.tokens = append(r.tokens, res[i].Next)
		e.st.tokensOut++
		if r.generated() == r.maxOut {
			if err := e.finish(ctx, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish releases a finished request's pages (they stay cached until
// evicted) and slot, and plans its conversation's next turn.
func (e *engine) finish(ctx context.Context, r *request) error {
	if err := e.timed(func() error { return e.kv.FreeSequence(ctx, r.seq) }); err != nil {
		return err
	}
	if err := e.syncEvents(); err != nil {
		return err
	}
	e.running = slices.DeleteFunc(e.running, func(x *request) bool { return x == r })
	e.freeSlots = append(e.freeSlots, r.slot)
	r.seq, r.pages, r.finished = 0, nil, e.step
	e.finished++
	if t := r.turn + 1; t < len(r.conv.turns) {
		e.addRequest(r.conv, t, r.tokens, e.step+1+r.conv.turns[t].think)
	}
	return nil
}

// freePagesAtEnd returns the number of pages the pool can hand out once
// every request has finished, measured through the page-manager actor: the
// largest prompt (of tokens no request has, under an extra key of its own,
// so nothing is hit) it admits. Every page must be free again: a smaller
// number is a leak.
func (e *engine) freePagesAtEnd(ctx context.Context) (int, error) {
	probe := func(pages int) (bool, error) {
		tokens := make([]int32, pages*e.ps)
		seq := e.nextSeq
		e.nextSeq++
		_, _, err := e.kv.AddSequence(ctx, seq, pagemanager.Request{Tokens: tokens, Extra: []string{"kvmesh-engine-free-page-probe"}})
		if errors.Is(err, pagemanager.ErrNoFreePages) {
			return false, e.syncEvents()
		}
		if err != nil {
			return false, err
		}
		if err := e.kv.FreeSequence(ctx, seq); err != nil {
			return false, err
		}
		return true, e.syncEvents()
	}
	lo, hi := 0, e.cfg.Scheduler.Pages // lo pages fit; find the most
	if ok, err := probe(hi); ok || err != nil {
		return hi, err
	}
	hi--
	for lo < hi {
		mid := (lo + hi + 1) / 2
		ok, err := probe(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}
