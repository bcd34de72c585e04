package pagemanager

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// model is a deliberately naive page pool with the same rules as Pool,
// written from the rules rather than from Pool's code: maps and slices,
// O(n) everywhere, and pages keyed by the whole token prefix as a string
// instead of a hash chain. FuzzPool checks that Pool agrees with it.
type model struct {
	ps, pages       int
	caching, hybrid bool

	ref     map[int32]int
	key     map[int32]string // the key a page carries; absent: none
	lru     []int32          // free pages, the next one taken first
	table   map[string][]int32
	seqs    map[SeqID]*modelSeq
	ckpt    map[string]Checkpoint
	dropped []Checkpoint

	// EvictShared, modelled from its documentation: the free pages of
	// lru are also in one of three queues (keyless, private, shared),
	// each in the order pages joined it.
	evictShared bool
	queues      [3][]int32
	sharedPg    map[int32]bool
	hitCount    map[int32]int
	since       map[int32]int64
	child       map[int32]string // key of the first page registered after it
	clock       int64
	privHits    int64
	privSlots   int64
	ghosts      []modelGhost                                        // the last NumPages private pages evicted, oldest first
	stats       struct{ branches, protected, stale, ghostHits int } // decisions, for tests
}

type modelSeq struct {
	pages []int32
	toks  []int32
	extra string
}

func newModel(cfg PoolConfig) *model {
	m := &model{
		ps: cfg.PageSize, pages: cfg.NumPages, caching: cfg.PrefixCaching, hybrid: cfg.Hybrid,
		ref: map[int32]int{}, key: map[int32]string{}, table: map[string][]int32{},
		seqs: map[SeqID]*modelSeq{}, ckpt: map[string]Checkpoint{},
		evictShared: cfg.Eviction == EvictShared,
		sharedPg:    map[int32]bool{}, hitCount: map[int32]int{}, since: map[int32]int64{}, child: map[int32]string{},
	}
	for i := 1; i < cfg.NumPages; i++ {
		m.lru = append(m.lru, int32(i))
		m.queues[0] = append(m.queues[0], int32(i))
	}
	return m
}

// queueOf returns the queue holding free page pg, or -1.
func (m *model) queueOf(pg int32) int {
	for q, pages := range m.queues {
		if slices.Contains(pages, pg) {
			return q
		}
	}
	return -1
}

// unqueue takes free page pg out of lru and of its queue.
func (m *model) unqueue(pg int32) {
	m.lru = slices.DeleteFunc(m.lru, func(q int32) bool { return q == pg })
	if q := m.queueOf(pg); q >= 0 {
		m.queues[q] = slices.DeleteFunc(m.queues[q], func(x int32) bool { return x == pg })
	}
}

// enqueue appends a page that became free to lru and to the queue of its
// kind.
func (m *model) enqueue(pg int32) {
	m.lru = append(m.lru, pg)
	q := 1
	if _, keyed := m.key[pg]; !keyed {
		q = 0
	} else if m.sharedPg[pg] {
		q = 2
	}
	m.queues[q] = append(m.queues[q], pg)
}

// forget drops EvictShared's record of a page that lost its key, moving
// it to the keyless queue if it is free.
func (m *model) forget(pg int32) {
	delete(m.sharedPg, pg)
	delete(m.hitCount, pg)
	delete(m.since, pg)
	delete(m.child, pg)
	if q := m.queueOf(pg); q > 0 {
		m.queues[q] = slices.DeleteFunc(m.queues[q], func(x int32) bool { return x == pg })
		m.queues[0] = append(m.queues[0], pg)
	}
}

// victim is the page EvictShared takes next.
func (m *model) victim() int32 {
	if len(m.queues[0]) > 0 {
		return m.queues[0][0]
	}
	if len(m.queues[2]) == 0 {
		return m.queues[1][0]
	}
	sh := m.queues[2][0]
	if len(m.queues[1]) == 0 {
		return sh
	}
	rate := float64(m.hitCount[sh]) / float64(m.clock-m.since[sh]+1)
	if rate < 1.5*float64(m.privHits+1)/float64(m.privSlots+10) {
		m.stats.stale++
		return sh
	}
	m.stats.protected++
	return m.queues[1][0]
}

// modelGhost is an evicted private page's key; used once it counted as
// a hit.
type modelGhost struct {
	key  string
	used bool
}

// ghost remembers the key of an evicted private page.
func (m *model) ghost(k string) {
	m.ghosts = append(m.ghosts, modelGhost{key: k})
	if len(m.ghosts) > m.pages {
		m.ghosts = m.ghosts[1:]
	}
}

// prefixKey names the content of the page ending at token end.
func prefixKey(extra string, toks []int32, end int) string {
	return fmt.Sprint(extra, "|", toks[:end])
}

func (m *model) lookup(toks []int32, extra string, recompute int) (Hit, []string) {
	var keys []string
	for i := 0; i < (len(toks)-recompute)/m.ps; i++ {
		k := prefixKey(extra, toks, (i+1)*m.ps)
		if len(m.table[k]) == 0 {
			break
		}
		keys = append(keys, k)
	}
	if m.hybrid {
		for len(keys) > 0 && m.ckpt[keys[len(keys)-1]] == 0 {
			keys = keys[:len(keys)-1]
		}
	}
	h := Hit{Tokens: len(keys) * m.ps}
	for _, k := range keys {
		h.Pages = append(h.Pages, m.table[k][0])
	}
	if m.hybrid && len(keys) > 0 {
		h.Restore = m.ckpt[keys[len(keys)-1]]
	}
	return h, keys
}

// pop takes the head of the free queue, evicting its key.
func (m *model) pop() (int32, bool) {
	pg := m.lru[0]
	if m.evictShared {
		pg = m.victim()
		if m.queueOf(pg) == 1 {
			m.ghost(m.key[pg])
		}
	}
	m.unqueue(pg)
	m.ref[pg] = 1
	k, ok := m.key[pg]
	if !ok {
		return pg, false
	}
	delete(m.key, pg)
	m.forget(pg)
	m.table[k] = slices.DeleteFunc(m.table[k], func(q int32) bool { return q == pg })
	if len(m.table[k]) == 0 {
		delete(m.table, k)
		if c, ok := m.ckpt[k]; ok {
			m.dropped = append(m.dropped, c)
			delete(m.ckpt, k)
		}
	}
	return pg, true
}

// register keys the full pages of s from page first on.
func (m *model) register(s *modelSeq, first int) {
	if !m.caching {
		return
	}
	for i := first; i < len(s.toks)/m.ps; i++ {
		k := prefixKey(s.extra, s.toks, (i+1)*m.ps)
		pg := s.pages[i]
		m.key[pg] = k
		m.table[k] = append(m.table[k], pg)
		m.forget(pg)
		m.since[pg] = m.clock
		if i := slices.Index(m.ghosts, modelGhost{key: k}); i >= 0 && m.evictShared {
			m.privHits++
			m.ghosts[i].used = true
			m.stats.ghostHits++
		}
		if i > 0 {
			if _, ok := m.child[s.pages[i-1]]; !ok {
				m.child[s.pages[i-1]] = k
			}
		}
	}
}

func (m *model) add(id SeqID, toks []int32, extra string, recompute int) (Step, error) {
	if m.seqs[id] != nil {
		return Step{}, ErrSequenceExists
	}
	if len(toks) == 0 || recompute < 0 || recompute > len(toks) {
		return Step{}, ErrInvalidRequest
	}
	var h Hit
	if m.caching {
		h, _ = m.lookup(toks, extra, recompute)
	}
	total := (len(toks) + m.ps - 1) / m.ps
	need := total - len(h.Pages)
	for _, pg := range h.Pages {
		if m.ref[pg] == 0 {
			need++
		}
	}
	if need > len(m.lru) {
		return Step{}, ErrNoFreePages
	}
	s := &modelSeq{toks: slices.Clone(toks), extra: extra}
	if m.evictShared {
		m.clock++
		m.privSlots += int64(len(m.queues[1]))
		for _, pg := range h.Pages {
			m.hitCount[pg]++
			if m.queueOf(pg) == 1 {
				m.privHits++
			}
		}
		// The prompt branches off a chain at its last hit page when its
		// next page differs from the first page registered after it.
		n, limit := len(h.Pages), (len(toks)-recompute)/m.ps
		if n > 0 && n < limit {
			if c, ok := m.child[h.Pages[n-1]]; ok && c != prefixKey(extra, toks, (n+1)*m.ps) {
				m.stats.branches++
				for _, pg := range h.Pages {
					m.sharedPg[pg] = true
				}
			}
		}
	}
	for _, pg := range h.Pages {
		if m.ref[pg] == 0 {
			m.unqueue(pg)
		}
		m.ref[pg]++
		s.pages = append(s.pages, pg)
	}
	st := Step{HitTokens: h.Tokens, NewPages: total - len(h.Pages), Restore: h.Restore}
	for range st.NewPages {
		pg, ev := m.pop()
		if ev {
			st.Evicted++
		}
		s.pages = append(s.pages, pg)
	}
	m.register(s, len(h.Pages))
	m.seqs[id] = s
	return st, nil
}

func (m *model) append(id SeqID, toks []int32) (Step, error) {
	s := m.seqs[id]
	if s == nil {
		return Step{}, ErrUnknownSequence
	}
	if len(toks) == 0 {
		return Step{}, ErrInvalidRequest
	}
	n := len(s.toks)
	total := (n + len(toks) + m.ps - 1) / m.ps
	cow := n%m.ps != 0 && m.ref[s.pages[len(s.pages)-1]] > 1
	need := total - len(s.pages)
	if cow {
		need++
	}
	if need > len(m.lru) {
		return Step{}, ErrNoFreePages
	}
	var st Step
	if cow {
		src := s.pages[len(s.pages)-1]
		dst, ev := m.pop()
		if ev {
			st.Evicted++
		}
		m.ref[src]--
		s.pages[len(s.pages)-1] = dst
		st.Copies = []Copy{{Src: src, Dst: dst, Tokens: n % m.ps}}
		st.NewPages++
	}
	for len(s.pages) < total {
		pg, ev := m.pop()
		if ev {
			st.Evicted++
		}
		s.pages = append(s.pages, pg)
		st.NewPages++
	}
	s.toks = append(s.toks, toks...)
	m.register(s, n/m.ps)
	return st, nil
}

func (m *model) free(id SeqID) error {
	s := m.seqs[id]
	if s == nil {
		return ErrUnknownSequence
	}
	for i := len(s.pages) - 1; i >= 0; i-- {
		m.ref[s.pages[i]]--
		if m.ref[s.pages[i]] == 0 {
			m.enqueue(s.pages[i])
		}
	}
	delete(m.seqs, id)
	return nil
}

func (m *model) fork(src, dst SeqID) error {
	s := m.seqs[src]
	if s == nil {
		return ErrUnknownSequence
	}
	if m.seqs[dst] != nil {
		return ErrSequenceExists
	}
	m.seqs[dst] = &modelSeq{pages: slices.Clone(s.pages), toks: slices.Clone(s.toks), extra: s.extra}
	for _, pg := range s.pages {
		m.ref[pg]++
	}
	return nil
}

func (m *model) evict(n int) int {
	done := 0
	for _, pg := range m.lru {
		if done == n {
			break
		}
		if k, ok := m.key[pg]; ok {
			delete(m.key, pg)
			m.forget(pg)
			m.table[k] = slices.DeleteFunc(m.table[k], func(q int32) bool { return q == pg })
			if len(m.table[k]) == 0 {
				delete(m.table, k)
				if c, ok := m.ckpt[k]; ok {
					m.dropped = append(m.dropped, c)
					delete(m.ckpt, k)
				}
			}
			done++
		}
	}
	return done
}

func (m *model) putCheckpoint(id SeqID, tokens int, c Checkpoint) (bool, error) {
	if !m.hybrid || c == 0 {
		return false, ErrInvalidCheckpoint
	}
	s := m.seqs[id]
	if s == nil {
		return false, ErrUnknownSequence
	}
	if tokens <= 0 || tokens%m.ps != 0 || tokens > len(s.toks) {
		return false, ErrInvalidCheckpoint
	}
	k := prefixKey(s.extra, s.toks, tokens)
	if m.ckpt[k] != 0 {
		return false, nil
	}
	m.ckpt[k] = c
	return true, nil
}

func (m *model) reset() error {
	if len(m.seqs) > 0 {
		for _, s := range m.seqs {
			if len(s.pages) > 0 {
				return ErrPoolBusy
			}
		}
	}
	m.key = map[int32]string{}
	m.table = map[string][]int32{}
	m.queues[0] = append(m.queues[0], m.queues[1]...)
	m.queues[0] = append(m.queues[0], m.queues[2]...)
	m.queues[1], m.queues[2] = nil, nil
	m.sharedPg, m.hitCount, m.since, m.child = map[int32]bool{}, map[int32]int{}, map[int32]int64{}, map[int32]string{}
	keys := make([]string, 0, len(m.ckpt))
	for k := range m.ckpt {
		keys = append(keys, k)
	}
	for _, k := range keys {
		m.dropped = append(m.dropped, m.ckpt[k])
	}
	m.ckpt = map[string]Checkpoint{}
	return nil
}

// sentinels are the errors the pool and the model must agree on.
var sentinels = []error{ErrNoFreePages, ErrInvalidRequest, ErrUnknownSequence, ErrSequenceExists, ErrPoolBusy, ErrInvalidCheckpoint}

func sentinelOf(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

// requireSame checks that the pool's observable state equals the model's.
func requireSame(t testing.TB, p *Pool, m *model, what string) {
	t.Helper()
	require.NoError(t, p.checkInvariants(), what)
	require.Equal(t, m.lru, p.free.appendTo([]int32{}), "%s: free queue", what)
	if e, ok := p.ev.(*sharedEvictor); ok {
		for q := range numQueues {
			got := []int32{}
			for pg := e.head[q]; pg != none; pg = e.next[pg] {
				got = append(got, pg)
			}
			require.Equal(t, append([]int32{}, m.queues[q]...), got, "%s: eviction queue %d", what, q)
		}
	}
	for pg := int32(1); pg < int32(m.pages); pg++ {
		require.Equal(t, m.ref[pg], p.RefCount(pg), "%s: refcount of page %d", what, pg)
		_, keyed := m.key[pg]
		require.Equal(t, keyed, p.hashed[pg], "%s: page %d keyed", what, pg)
	}
	require.Equal(t, len(m.seqs), p.seqs.len(), what)
	for id, s := range m.seqs {
		pages, n, ok := p.BlockTable(id)
		require.True(t, ok, "%s: seq %d", what, id)
		require.Equal(t, s.pages, pages, "%s: block table of seq %d", what, id)
		require.Equal(t, len(s.toks), n, "%s: tokens of seq %d", what, id)
	}
	require.Len(t, p.table, len(m.table), "%s: keys", what)
	for k, pages := range m.table {
		require.Equal(t, pages, p.chainPages(p.key[pages[0]]), "%s: pages keyed %q", what, k)
	}
	require.Equal(t, len(m.ckpt), p.NumCheckpoints(), "%s: checkpoints", what)
	for k, c := range m.ckpt {
		got, ok := p.ckpts[p.key[m.table[k][0]]]
		require.True(t, ok, "%s: checkpoint for %q", what, k)
		require.Equal(t, c, got, "%s: checkpoint for %q", what, k)
	}
}

// byteReader hands out fuzz input bytes, then zeros.
type byteReader struct{ b []byte }

func (r *byteReader) next() int {
	if len(r.b) == 0 {
		return 0
	}
	v := int(r.b[0])
	r.b = r.b[1:]
	return v
}

func (r *byteReader) tokens(n int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(r.next() % 3) // a tiny vocabulary: prefixes collide often
	}
	return t
}

// runPoolModel decodes data into a configuration and a sequence of
// operations, runs them on a Pool and on the model, and checks that they
// agree after every operation. It returns a transcript for debugging.
func runPoolModel(t testing.TB, data []byte) string {
	r := &byteReader{b: data}
	c := r.next()
	cfg := PoolConfig{
		NumPages:      2 + c%10,
		PageSize:      1 + (c/10)%3,
		PrefixCaching: c&0x40 == 0,
	}
	cfg.Hybrid = cfg.PrefixCaching && c&0x80 != 0
	if cfg.PrefixCaching && c&0x20 != 0 {
		cfg.Eviction = EvictShared
	}
	p, err := NewPool(cfg)
	require.NoError(t, err)
	m := newModel(cfg)
	var log strings.Builder
	fmt.Fprintf(&log, "%+v\n", cfg)
	handle := Checkpoint(0)
	for step := 0; len(r.b) > 0 && step < 200; step++ {
		op := r.next() % 9
		id := SeqID(r.next() % 4)
		var what string
		switch op {
		case 0, 1:
			toks := r.tokens(1 + r.next()%12)
			if r.next()%8 == 0 {
				toks = nil
			}
			var extra []string
			if r.next()%4 == 0 {
				extra = []string{"x"}
			}
			rc := r.next() % 3
			if rc > len(toks) {
				rc = len(toks) + 1 // out of range: an error
			}
			what = fmt.Sprintf("add %d %v %v rc=%d", id, toks, extra, rc)
			got, gerr := p.Add(id, Request{Tokens: toks, Extra: extra, Recompute: rc})
			want, werr := m.add(id, toks, strings.Join(extra, ","), rc)
			require.Equal(t, sentinelOf(werr), sentinelOf(gerr), what)
			require.Equal(t, want, got, what)
		case 2, 3:
			toks := r.tokens(r.next() % 7)
			what = fmt.Sprintf("append %d %v", id, toks)
			got, gerr := p.Append(id, toks)
			want, werr := m.append(id, toks)
			require.Equal(t, sentinelOf(werr), sentinelOf(gerr), what)
			require.Equal(t, want, got, what)
		case 4:
			dst := SeqID(r.next() % 4)
			what = fmt.Sprintf("fork %d %d", id, dst)
			require.Equal(t, sentinelOf(m.fork(id, dst)), sentinelOf(p.Fork(id, dst)), what)
		case 5:
			what = fmt.Sprintf("free %d", id)
			require.Equal(t, sentinelOf(m.free(id)), sentinelOf(p.Free(id)), what)
		case 6:
			n := r.next() % 3
			what = fmt.Sprintf("evict %d", n)
			require.Equal(t, m.evict(n), p.Evict(n), what)
		case 7:
			tokens := (r.next() % 5) * cfg.PageSize
			c := Checkpoint(0)
			if r.next()%6 != 0 {
				handle++
				c = handle
			}
			what = fmt.Sprintf("checkpoint %d at %d = %d", id, tokens, c)
			got, gerr := p.PutCheckpoint(id, tokens, c)
			want, werr := m.putCheckpoint(id, tokens, c)
			require.Equal(t, sentinelOf(werr), sentinelOf(gerr), what)
			require.Equal(t, want, got, what)
		case 8:
			if r.next()%4 == 0 {
				what = "reset"
				require.Equal(t, sentinelOf(m.reset()), sentinelOf(p.ResetPrefixCache()), what)
				break
			}
			toks := r.tokens(r.next() % 12)
			rc := min(r.next()%2, len(toks))
			what = fmt.Sprintf("lookup %v rc=%d", toks, rc)
			got, err := p.Lookup(toks, nil, rc)
			require.NoError(t, err, what)
			want := Hit{}
			if cfg.PrefixCaching {
				want, _ = m.lookup(toks, "", rc)
			}
			require.Equal(t, want, got, what)
		}
		log.WriteString(what + "\n")
		requireSame(t, p, m, what)
		gotDropped, wantDropped := p.TakeDroppedCheckpoints(), m.dropped
		m.dropped = nil
		if what == "reset" { // map order: compare as sets
			slices.Sort(gotDropped)
			slices.Sort(wantDropped)
		}
		require.Equal(t, wantDropped, gotDropped, "%s: dropped checkpoints", what)
	}
	return log.String()
}

// FuzzPool checks Pool against the naive model on operation sequences
// decoded from the input.
func FuzzPool(f *testing.F) {
	f.Add([]byte{0x05, 0, 1, 6, 1, 2, 0, 1, 1, 5, 1, 0, 1, 3, 0, 0, 5, 0, 0, 2, 1, 2, 1, 1})
	f.Add([]byte{0x97, 0, 1, 8, 0, 0, 1, 1, 0, 1, 0, 2, 7, 1, 2, 1, 5, 1, 0, 2, 6, 0, 0, 0, 0, 0, 0, 7, 3, 4, 4, 2, 0, 0})
	f.Add([]byte{0x48, 0, 2, 5, 9, 9, 9, 9, 9, 1, 1, 4, 2, 3, 3, 2, 4, 1, 1, 1, 5, 2, 3, 1, 2, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		runPoolModel(t, data)
	})
}

// TestPoolAgainstModel runs the model comparison on many seeded random
// inputs, so that plain `go test` explores beyond the fuzz seeds.
func TestPoolAgainstModel(t *testing.T) {
	n := 3000
	if testing.Short() {
		n = 300
	}
	var x uint64 = 0x9e3779b97f4a7c15
	for i := range n {
		data := make([]byte, 64+i%256)
		for j := range data {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			data[j] = byte(x)
		}
		runPoolModel(t, data)
	}
}

// TestSharedEvictionAgainstModel drives a pool with EvictShared and the
// model with chat-shaped traffic (conversations extending their own
// history after one of a few shared prefixes, in pools too small for
// them, with forks, appends, evictions and resets) and checks that they
// agree after every operation. The traffic must make the policy both
// protect a shared page and give up a stale one, or the test proves
// nothing.
func TestSharedEvictionAgainstModel(t *testing.T) {
	var branches, protected, stale, ghostHits int
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 9))
		cfg := PoolConfig{NumPages: 6 + rng.IntN(30), PageSize: 1 + rng.IntN(4), PrefixCaching: true, Eviction: EvictShared}
		p, err := NewPool(cfg)
		require.NoError(t, err)
		m := newModel(cfg)
		prefixes := make([][]int32, 1+rng.IntN(3))
		for i := range prefixes {
			prefixes[i] = randTokens(rng, 2+rng.IntN(10), 50)
		}
		history := make([][]int32, 6) // per conversation
		var live []SeqID
		next := SeqID(1)
		for op := range 400 {
			var what string
			switch k := rng.IntN(20); {
			case k < 8: // a turn of a conversation, or a new one
				c := rng.IntN(len(history))
				if history[c] == nil || rng.IntN(8) == 0 {
					history[c] = slices.Clone(prefixes[rng.IntN(len(prefixes))])
				}
				toks := append(slices.Clone(history[c]), randTokens(rng, 1+rng.IntN(6), 50)...)
				rc := rng.IntN(2)
				what = fmt.Sprintf("add %d %v rc=%d", next, toks, rc)
				got, gerr := p.Add(next, Request{Tokens: toks, Recompute: rc})
				want, werr := m.add(next, toks, "", rc)
				require.Equal(t, sentinelOf(werr), sentinelOf(gerr), what)
				require.Equal(t, want, got, what)
				if gerr == nil {
					live = append(live, next)
					history[c] = append(toks, randTokens(rng, rng.IntN(4), 50)...)
				}
				next++
			case k < 11 && len(live) > 0:
				id := live[rng.IntN(len(live))]
				toks := randTokens(rng, 1+rng.IntN(3), 50)
				what = fmt.Sprintf("append %d %v", id, toks)
				got, gerr := p.Append(id, toks)
				want, werr := m.append(id, toks)
				require.Equal(t, sentinelOf(werr), sentinelOf(gerr), what)
				require.Equal(t, want, got, what)
			case k < 12 && len(live) > 0:
				id := live[rng.IntN(len(live))]
				what = fmt.Sprintf("fork %d %d", id, next)
				require.Equal(t, sentinelOf(m.fork(id, next)), sentinelOf(p.Fork(id, next)), what)
				live = append(live, next)
				next++
			case k < 18 && len(live) > 0:
				j := rng.IntN(len(live))
				what = fmt.Sprintf("free %d", live[j])
				require.Equal(t, sentinelOf(m.free(live[j])), sentinelOf(p.Free(live[j])), what)
				live = slices.Delete(live, j, j+1)
			case k == 18:
				n := rng.IntN(3)
				what = fmt.Sprintf("evict %d", n)
				require.Equal(t, m.evict(n), p.Evict(n), what)
			case k == 19 && op%50 == 0:
				what = "reset"
				require.Equal(t, sentinelOf(m.reset()), sentinelOf(p.ResetPrefixCache()), what)
			default:
				continue
			}
			requireSame(t, p, m, fmt.Sprintf("seed %d op %d: %s", seed, op, what))
		}
		branches += m.stats.branches
		protected += m.stats.protected
		stale += m.stats.stale
		ghostHits += m.stats.ghostHits
	}
	t.Logf("%d branches, %d shared heads protected, %d given up, %d ghost hits", branches, protected, stale, ghostHits)
	assert.Positive(t, branches)
	assert.Positive(t, ghostHits)
	assert.Positive(t, protected)
	assert.Positive(t, stale)
}
