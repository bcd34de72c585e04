package pagemanager

import (
	"fmt"
	"math"
	"slices"
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// NumPages is the number of pages, the reserved page 0 included:
	// pages 1..NumPages-1 can be allocated.
	NumPages int
	// PageSize is the number of tokens per page.
	PageSize int
	// PrefixCaching keys every full page by its hash chain and lets new
	// sequences reuse cached pages; freed pages keep their key until they
	// are evicted.
	PrefixCaching bool
	// Hybrid marks a model with recurrent layers (Mamba, Mamba2,
	// Lightning) besides attention: a prefix hit counts only up to a page
	// boundary whose recurrent-state checkpoint exists. It needs
	// PrefixCaching.
	Hybrid bool
	// Events makes the pool accumulate KV events for TakeEvents. It needs
	// PrefixCaching. Without it no events are kept.
	Events bool
	// Eviction selects which free page an allocation takes: EvictLRU (the
	// zero value, vLLM's order), EvictShared or EvictLineage; the last two
	// need PrefixCaching.
	Eviction Eviction
}

// Validate checks that NumPages is in 2..math.MaxInt32 (page 0 is
// reserved; page indices are int32), that PageSize is positive, that
// Hybrid and Events come with PrefixCaching, and that Eviction is a known
// policy (EvictShared and EvictLineage with PrefixCaching).
func (c PoolConfig) Validate() error {
	if c.NumPages < 2 || c.NumPages > math.MaxInt32 {
		return fmt.Errorf("%w: %d pages, want 2..%d (page 0 is reserved; page indices are int32)", ErrInvalidConfig, c.NumPages, math.MaxInt32)
	}
	if c.PageSize <= 0 {
		return fmt.Errorf("%w: page size %d, want a positive number of tokens", ErrInvalidConfig, c.PageSize)
	}
	if c.Hybrid && !c.PrefixCaching {
		return fmt.Errorf("%w: Hybrid without PrefixCaching (checkpoints are keyed by page hashes)", ErrInvalidConfig)
	}
	if c.Events && !c.PrefixCaching {
		return fmt.Errorf("%w: Events without PrefixCaching (events describe cached pages)", ErrInvalidConfig)
	}
	if int(c.Eviction) >= len(evictionNames) {
		return fmt.Errorf("%w: eviction policy %d, want %d..%d", ErrInvalidConfig, c.Eviction, EvictLRU, len(evictionNames)-1)
	}
	if c.Eviction != EvictLRU && !c.PrefixCaching {
		return fmt.Errorf("%w: eviction policy %s without PrefixCaching (it orders cached pages)", ErrInvalidConfig, c.Eviction)
	}
	return nil
}

// SeqID identifies a sequence (a request, or one branch of a parallel
// sampling or beam search) in a Pool.
type SeqID uint64

// Request is a new sequence's prompt.
type Request struct {
	// Tokens are the prompt's token ids; at least one.
	Tokens []int32
	// Extra are the extra keys mixed into the hash of every page of the
	// sequence (adapter name, cache salt, ...): sequences with different
	// extra keys never share cached pages. The pool keeps the slice; the
	// caller must not modify it afterwards.
	Extra []string
	// Recompute is the number of trailing prompt tokens that must be
	// computed even when cached: the hit covers at most
	// len(Tokens)-Recompute tokens. vLLM uses 1 (the last prompt token is
	// always recomputed, to get its logits); 0 puts no cap.
	Recompute int
}

// Step is what one Add or Append did, for the cache layer to act on.
type Step struct {
	// HitTokens is the number of prompt tokens found in the prefix cache
	// (Add only): the caller computes keys and values from there on.
	HitTokens int
	// NewPages is the number of pages taken from the free queue.
	NewPages int
	// Evicted is the number of those pages that were cached, and whose
	// key was dropped to reuse them.
	Evicted int
	// Copies are the pages the cache layer must copy before writing: the
	// copy-on-write of a shared partial page (Append after Fork).
	Copies []Copy
	// Restore is, in a hybrid pool, the recurrent-state checkpoint to
	// restore at HitTokens (Add only; NoCheckpoint when HitTokens is 0).
	Restore Checkpoint
}

// Stats are a Pool's running counters.
type Stats struct {
	// Requests is the number of sequences added.
	Requests int64
	// PromptTokens is the number of prompt tokens of those sequences.
	PromptTokens int64
	// HitTokens is the number of those tokens served by the prefix cache.
	HitTokens int64
	// Evictions is the number of cached pages whose key was dropped, to
	// reuse the page or by Evict.
	Evictions int64
	// Copies is the number of copy-on-write page copies.
	Copies int64
}

// HitRate returns HitTokens / PromptTokens, or 0 before any prompt.
func (s Stats) HitRate() float64 {
	if s.PromptTokens == 0 {
		return 0
	}
	return float64(s.HitTokens) / float64(s.PromptTokens)
}

// sequence is one sequence's block table and the state needed to key its
// pages as they fill.
type sequence struct {
	pages    []int32  // block table: page i holds tokens i*PageSize..
	n        int      // tokens written
	tail     []int32  // the tokens of the last page when it is partial (n % PageSize of them)
	parent   Key      // key of the last full page; RootKey before the first
	extra    []string // extra keys, as given
	extraEnc []byte   // their encoding for the hash
}

// Pool is a serving-grade page pool for a paged KV cache: reference-counted
// pages, prefix caching with LRU eviction, fork with copy-on-write,
// recurrent-state checkpoints for hybrid models and KV events. It goes
// beyond EasyDeL's HBMPageManager, to vLLM v1's block pool.
//
// Page 0 is reserved (page tables hold it for unused entries) and is never
// handed out. Every other page is either held by sequences (refcount > 0)
// or in the free queue (refcount 0). The free queue is in LRU order and
// holds both never-used pages and cached ones: a freed page keeps its key
// and can be hit until it is taken again. Allocation takes pages from the
// head of the queue; a taken page that still carries a key loses it then
// (lazy eviction). Freeing a sequence appends its pages to the tail in
// reverse order, last page first, so a request's tail is evicted before
// its head. A hit on a cached free page unlinks it from the middle of the
// queue. Allocation, freeing and unlinking are O(1) per page; a lookup is
// one SHA-256 per page up to the first miss. That is EvictLRU, the default;
// PoolConfig.Eviction can select another order of the free pages (see
// Eviction), with the same costs.
//
// Every operation on a sequence is all or nothing: when it fails, with an
// error wrapping a sentinel, the pool is unchanged.
//
// A Pool is a mutable state machine, not a value: unlike kvmesh's caches,
// its methods change the receiver (pages are a fixed budget, counted
// explicitly). It is not safe for concurrent use; one owner (the page
// manager actor) serialises the calls.
type Pool struct {
	cfg PoolConfig

	ref       []int32  // refcount of each page
	key       []Key    // key of each page, valid when hashed
	hashed    []bool   // the page carries a key and is in the table
	dupNext   []int32  // next page with the same key, in registration order
	dupPrev   []int32  // previous page with the same key
	free      freeList // unreferenced pages, LRU first
	used      int      // pages with refcount > 0
	numHashed int      // pages carrying a key
	table     map[Key]chain

	seqs  seqTable
	spare []*sequence // freed sequences, reused by Add and Fork

	ckpts   map[Key]Checkpoint
	dropped []Checkpoint

	events   []Event
	eventSeq uint64
	removed  []Key // keys that left the table during the current operation

	storedKeys   []Key   // scratch: keys registered by the current write
	storedTokens []int32 // scratch: their tokens, for BlockStored

	stats Stats

	ev evictor // the eviction policy's order of the free pages; nil: LRU

	h        hasher
	keyBuf   []Key
	extraBuf []byte
}

// NewPool returns a pool whose pages 1..NumPages-1 are all free, in
// ascending order.
func NewPool(cfg PoolConfig) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.NumPages
	p := &Pool{
		cfg:     cfg,
		ref:     make([]int32, n),
		key:     make([]Key, n),
		hashed:  make([]bool, n),
		dupNext: make([]int32, n),
		dupPrev: make([]int32, n),
		free:    newFreeList(n),
		table:   make(map[Key]chain),
		ckpts:   make(map[Key]Checkpoint),
	}
	switch cfg.Eviction {
	case EvictShared:
		p.ev = newSharedEvictor(p.hashed, p.key)
	case EvictLineage:
		p.ev = newLineageEvictor(p.hashed, p.key)
	}
	for i := 1; i < n; i++ {
		p.free.pushBack(int32(i))
		if p.ev != nil {
			p.ev.released(int32(i))
		}
	}
	return p, nil
}

// Config returns the pool's configuration.
func (p *Pool) Config() PoolConfig { return p.cfg }

// NumFree returns the number of pages in the free queue, cached ones
// included: the pages an allocation can take.
func (p *Pool) NumFree() int { return p.free.len() }

// NumUsed returns the number of pages held by sequences.
func (p *Pool) NumUsed() int { return p.used }

// NumCached returns the number of pages carrying a key, held or free.
func (p *Pool) NumCached() int { return p.numHashed }

// Stats returns the running counters.
func (p *Pool) Stats() Stats { return p.stats }

// RefCount returns the number of block-table entries that hold page pg.
func (p *Pool) RefCount(pg int32) int {
	if pg < 0 || int(pg) >= len(p.ref) {
		return 0
	}
	return int(p.ref[pg])
}

// BlockTable returns a copy of a sequence's block table and its token
// count; ok is false for an unknown sequence.
func (p *Pool) BlockTable(id SeqID) (pages []int32, tokens int, ok bool) {
	s := p.seqs.get(id)
	if s == nil {
		return nil, 0, false
	}
	return slices.Clone(s.pages), s.n, true
}

// Sequences returns the ids of the pool's sequences, in ascending order.
func (p *Pool) Sequences() []SeqID {
	ids := make([]SeqID, 0, p.seqs.len())
	p.seqs.all(func(id SeqID, _ *sequence) { ids = append(ids, id) })
	slices.Sort(ids)
	return ids
}

// Add starts sequence id with a prompt: it reuses the longest cached
// prefix of full pages (see Lookup), takes pages from the free queue for
// the rest of the prompt, and registers every full page of the prompt that
// was not a hit under its key. Hit pages that were in the free queue are
// unlinked from it, so a request never evicts its own prefix.
//
// It is all or nothing: with fewer free pages than the prompt needs (new
// pages plus hit pages that sit in the free queue) it returns an error
// wrapping ErrNoFreePages and changes nothing. An existing id is
// ErrSequenceExists; an empty prompt or a Recompute outside 0..len(Tokens)
// is ErrInvalidRequest.
func (p *Pool) Add(id SeqID, req Request) (Step, error) {
	if p.seqs.get(id) != nil {
		return Step{}, fmt.Errorf("%w: sequence %d", ErrSequenceExists, id)
	}
	n := len(req.Tokens)
	if n == 0 {
		return Step{}, fmt.Errorf("%w: sequence %d has an empty prompt, want at least 1 token", ErrInvalidRequest, id)
	}
	if err := checkRecompute(n, req.Recompute); err != nil {
		return Step{}, fmt.Errorf("%w: sequence %d: %s", ErrInvalidRequest, id, err)
	}
	ps := p.cfg.PageSize
	total := (n + ps - 1) / ps
	var extraEnc []byte
	keys, hit := p.keyBuf[:0], 0
	if p.cfg.PrefixCaching {
		extraEnc = encodeExtra(nil, req.Extra)
		keys, hit = p.match(keys, req.Tokens, extraEnc, req.Recompute)
	}
	need := total - hit
	for _, k := range keys[:hit] {
		if pg, _ := p.cachedPage(k); p.ref[pg] == 0 {
			need++
		}
	}
	if free := p.free.len(); need > free {
		p.keyBuf = keys
		return Step{}, fmt.Errorf("%w: sequence %d needs %d pages for %d tokens (%d hit), %d free of %d", ErrNoFreePages, id, need, n, hit*ps, free, p.cfg.NumPages-1)
	}

	s := p.newSequence()
	s.extra, s.extraEnc = req.Extra, extraEnc
	step := Step{HitTokens: hit * ps, NewPages: total - hit, Restore: p.restoreAt(keys[:hit])}
	for _, k := range keys[:hit] {
		pg, _ := p.cachedPage(k)
		s.pages = append(s.pages, pg)
	}
	if p.ev != nil {
		p.ev.tick()
		var next Key
		if len(keys) > hit {
			next = keys[hit]
		}
		p.ev.hits(s.pages, next, len(keys) > hit)
	}
	for _, pg := range s.pages {
		p.take(pg)
	}
	for range total - hit {
		pg, evicted := p.pop()
		if evicted {
			step.Evicted++
		}
		s.pages = append(s.pages, pg)
	}
	if hit > 0 {
		s.parent = keys[hit-1]
	}
	s.n = hit * ps
	p.keyBuf = keys
	p.flushRemoved() // BlockRemoved for the evictions before BlockStored
	p.write(s, req.Tokens[hit*ps:], keys[hit:])
	if p.ev != nil {
		p.ev.added(s.pages, hit)
	}
	p.seqs.put(id, s)
	p.stats.Requests++
	p.stats.PromptTokens += int64(n)
	p.stats.HitTokens += int64(step.HitTokens)
	return step, nil
}

// Append writes tokens after the end of sequence id (decode, or the next
// chunk of a chunked prefill): it takes a page from the free queue each
// time the last one is full, and registers every page that fills under its
// key, so that later requests can hit through generated tokens. If the
// last page is partial and shared with a fork, the sequence first gets its
// own copy of it: Step.Copies says which page to copy where.
//
// It is all or nothing: with too few free pages it returns an error
// wrapping ErrNoFreePages and changes nothing. An unknown id is
// ErrUnknownSequence; no tokens is ErrInvalidRequest.
func (p *Pool) Append(id SeqID, tokens []int32) (Step, error) {
	s := p.seqs.get(id)
	if s == nil {
		return Step{}, fmt.Errorf("%w: sequence %d", ErrUnknownSequence, id)
	}
	if len(tokens) == 0 {
		return Step{}, fmt.Errorf("%w: append of 0 tokens to sequence %d, want at least 1", ErrInvalidRequest, id)
	}
	ps := p.cfg.PageSize
	total := (s.n + len(tokens) + ps - 1) / ps
	need := total - len(s.pages)
	cow := s.n%ps != 0 && p.ref[s.pages[len(s.pages)-1]] > 1
	if cow {
		need++
	}
	if free := p.free.len(); need > free {
		return Step{}, fmt.Errorf("%w: sequence %d needs %d pages to append %d tokens to %d, %d free of %d", ErrNoFreePages, id, need, len(tokens), s.n, free, p.cfg.NumPages-1)
	}
	var step Step
	if cow {
		c, evicted := p.copyLast(s)
		step.Copies = []Copy{c}
		step.NewPages++
		if evicted {
			step.Evicted++
		}
	}
	for len(s.pages) < total {
		pg, evicted := p.pop()
		if evicted {
			step.Evicted++
		}
		s.pages = append(s.pages, pg)
		step.NewPages++
	}
	p.flushRemoved() // BlockRemoved for the evictions before BlockStored
	p.write(s, tokens, nil)
	return step, nil
}

// Free ends sequence id: it drops its references, last page first, and
// appends each page whose refcount reaches 0 to the tail of the free
// queue, where it keeps its key until evicted. An unknown id is
// ErrUnknownSequence.
func (p *Pool) Free(id SeqID) error {
	s := p.seqs.remove(id)
	if s == nil {
		return fmt.Errorf("%w: sequence %d", ErrUnknownSequence, id)
	}
	if p.ev != nil {
		p.ev.freeing(s.pages)
	}
	for i := len(s.pages) - 1; i >= 0; i-- {
		p.release(s.pages[i])
	}
	s.pages, s.tail = s.pages[:0], s.tail[:0]
	s.extra, s.extraEnc = nil, nil
	p.spare = append(p.spare, s)
	return nil
}

// Evict drops the keys of up to n cached pages in the free queue, least
// recently used first, and returns how many it dropped. The pages stay in
// the queue where they are, as plain free pages. Allocation evicts lazily
// by itself; Evict is for callers that want the memory of the cached
// content back now (and for tests). It follows the LRU order whatever the
// pool's Eviction (with EvictShared the pages become keyless pages, taken
// first).
func (p *Pool) Evict(n int) int {
	done := 0
	for pg := p.free.head; pg != none && done < n; pg = p.free.next[pg] {
		if p.hashed[pg] {
			p.unregister(pg)
			p.stats.Evictions++
			done++
		}
	}
	p.flushRemoved()
	return done
}

// ResetPrefixCache drops every key, as vLLM's reset_prefix_cache does,
// drops every checkpoint, and emits AllBlocksCleared. The free queue keeps
// its order. It fails with ErrPoolBusy while sequences hold pages.
func (p *Pool) ResetPrefixCache() error {
	if p.used > 0 {
		return fmt.Errorf("%w: %d sequences hold %d pages", ErrPoolBusy, p.seqs.len(), p.used)
	}
	for pg := range p.hashed {
		p.hashed[pg] = false
	}
	p.numHashed = 0
	clear(p.table)
	if p.ev != nil {
		p.ev.reset()
	}
	for k, c := range p.ckpts {
		p.dropped = append(p.dropped, c)
		delete(p.ckpts, k)
	}
	p.emit(AllBlocksCleared{})
	return nil
}

// newSequence returns an empty sequence, reusing a freed one.
func (p *Pool) newSequence() *sequence {
	if n := len(p.spare); n > 0 {
		s := p.spare[n-1]
		p.spare = p.spare[:n-1]
		*s = sequence{pages: s.pages[:0], tail: s.tail[:0]}
		return s
	}
	return &sequence{}
}

// pop takes the page at the head of the free queue (with an eviction
// policy other than LRU, the page the policy picks), dropping its key if
// it has one (evicted reports that), and gives it refcount 1. The caller
// has checked that the queue is not empty.
func (p *Pool) pop() (pg int32, evicted bool) {
	if p.free.len() == 0 {
		panic("pagemanager: pop from an empty free queue")
	}
	if p.ev != nil {
		pg = p.ev.victim()
		p.free.remove(pg)
	} else {
		pg, _ = p.free.popFront()
	}
	if p.hashed[pg] {
		p.unregister(pg)
		p.stats.Evictions++
		evicted = true
	}
	p.ref[pg] = 1
	p.used++
	return pg, evicted
}

// take adds a reference to page pg, unlinking it from the free queue if
// it was there.
func (p *Pool) take(pg int32) {
	if p.ref[pg] == 0 {
		p.free.remove(pg)
		if p.ev != nil {
			p.ev.taken(pg)
		}
		p.used++
	}
	p.ref[pg]++
}

// release drops a reference to page pg, appending it to the tail of the
// free queue when none is left.
func (p *Pool) release(pg int32) {
	p.ref[pg]--
	if p.ref[pg] == 0 {
		p.used--
		p.free.pushBack(pg)
		if p.ev != nil {
			p.ev.released(pg)
		}
	}
}

// write records tokens written after the end of s, whose pages are
// already in s.pages, and registers every page that fills. keys, if not
// empty, are the precomputed keys of the first pages that fill.
func (p *Pool) write(s *sequence, tokens []int32, keys []Key) {
	ps := p.cfg.PageSize
	if !p.cfg.PrefixCaching {
		s.n += len(tokens)
		return
	}
	parent := s.parent
	stored, storedTokens := p.storedKeys[:0], p.storedTokens[:0]
	for len(tokens) > 0 {
		k := min(ps-len(s.tail), len(tokens))
		var page []int32 // the page's tokens, when this write fills it
		if len(s.tail) == 0 && k == ps {
			page = tokens[:ps] // a whole page: hash it from the input
		} else {
			s.tail = append(s.tail, tokens[:k]...)
			if len(s.tail) == ps {
				page = s.tail
			}
		}
		s.n += k
		tokens = tokens[k:]
		if page == nil {
			continue
		}
		key := p.pageKey(s, page, keys, len(stored))
		p.register(s.pages[s.n/ps-1], key)
		if p.ev != nil {
			parent := none
			if s.n/ps >= 2 {
				parent = s.pages[s.n/ps-2]
			}
			p.ev.registered(s.pages[s.n/ps-1], parent, key)
		}
		s.parent = key
		stored = append(stored, key)
		if p.cfg.Events {
			storedTokens = append(storedTokens, page...)
		}
		s.tail = s.tail[:0]
	}
	p.storedKeys, p.storedTokens = stored, storedTokens
	if len(stored) > 0 && p.cfg.Events {
		p.emit(BlockStored{
			Hashes:    slices.Clone(stored),
			Parent:    parent,
			TokenIDs:  slices.Clone(storedTokens),
			PageSize:  ps,
			ExtraKeys: s.extra,
		})
	}
}

// pageKey returns the key of the filled-th page filled by a write: keys
// precomputed by the lookup if there are, else the hash of page.
func (p *Pool) pageKey(s *sequence, page []int32, keys []Key, filled int) Key {
	if filled < len(keys) {
		return keys[filled]
	}
	return p.h.sum(s.parent, page, s.extraEnc)
}
