package pagemanager

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseEviction(t *testing.T) {
	for _, tt := range []struct {
		name string
		want Eviction
	}{{"lru", EvictLRU}, {"shared", EvictShared}, {"lineage", EvictLineage}} {
		got, err := ParseEviction(tt.name)
		require.NoError(t, err)
		assert.Equal(t, tt.want, got)
		assert.Equal(t, tt.name, got.String())
	}
	for _, bad := range []string{"", "LRU", "vllm", "lfu"} {
		_, err := ParseEviction(bad)
		assert.ErrorIs(t, err, ErrInvalidConfig, bad)
		assert.ErrorContains(t, err, "want one of lru, shared, lineage", bad)
	}
	assert.Equal(t, "Eviction(9)", Eviction(9).String())

	// Text marshalling: a config can name the policy in JSON.
	b, err := json.Marshal(PoolConfig{NumPages: 4, PageSize: 2, PrefixCaching: true, Eviction: EvictShared})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"Eviction":"shared"`)
	var cfg PoolConfig
	require.NoError(t, json.Unmarshal(b, &cfg))
	assert.Equal(t, EvictShared, cfg.Eviction)
	assert.ErrorIs(t, json.Unmarshal([]byte(`{"Eviction":"mru"}`), &cfg), ErrInvalidConfig)
	_, err = json.Marshal(PoolConfig{Eviction: 9})
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestEvictionConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		cfg  PoolConfig
		want string // "" when valid
	}{
		{PoolConfig{NumPages: 4, PageSize: 2, PrefixCaching: true, Eviction: EvictShared}, ""},
		{PoolConfig{NumPages: 4, PageSize: 2, Eviction: EvictLRU}, ""},
		{PoolConfig{NumPages: 4, PageSize: 2, Eviction: EvictShared}, "eviction policy shared without PrefixCaching"},
		{PoolConfig{NumPages: 4, PageSize: 2, PrefixCaching: true, Eviction: EvictLineage}, ""},
		{PoolConfig{NumPages: 4, PageSize: 2, Eviction: EvictLineage}, "eviction policy lineage without PrefixCaching"},
		{PoolConfig{NumPages: 4, PageSize: 2, PrefixCaching: true, Eviction: 3}, "eviction policy 3, want 0..2"},
	} {
		err := tt.cfg.Validate()
		if tt.want == "" {
			assert.NoError(t, err)
			continue
		}
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, tt.want)
	}
}

// both returns an LRU pool and an EvictShared pool of the same size,
// whose invariants are checked when the test ends.
func both(t *testing.T, pages, pageSize int) (lru, shared *Pool) {
	lru = newTestPool(t, PoolConfig{NumPages: pages, PageSize: pageSize, PrefixCaching: true})
	shared = newTestPool(t, PoolConfig{NumPages: pages, PageSize: pageSize, PrefixCaching: true, Eviction: EvictShared})
	return lru, shared
}

// run adds a prompt as sequence id (nothing recomputed) and frees it.
func run(t *testing.T, p *Pool, id SeqID, toks ...int32) Step {
	t.Helper()
	st, err := p.Add(id, Request{Tokens: toks})
	require.NoError(t, err)
	require.NoError(t, p.Free(id))
	return st
}

// TestEvictSharedKeylessFirst: a free page without a key is taken before
// a cached one, even when the cached one is older. Pages of 2 tokens,
// 4 usable. A = [1 2 3 4] takes pages 1, 2 (both cached), freed: the
// queue is 3 4 2 1. B = [5 6 7] takes 3 (cached) and 4 (partial, no
// key), freed: 2 1 4 3. C needs one page: LRU takes page 2 and evicts
// A's second page; EvictShared takes page 4, and A stays whole.
func TestEvictSharedKeylessFirst(t *testing.T) {
	lru, shared := both(t, 5, 2)
	for _, p := range []*Pool{lru, shared} {
		run(t, p, 1, 1, 2, 3, 4)
		run(t, p, 2, 5, 6, 7)
		assert.Equal(t, []int32{2, 1, 4, 3}, p.free.appendTo(nil))
	}
	st := run(t, lru, 3, 8, 8)
	assert.Equal(t, 1, st.Evicted)
	st = run(t, shared, 3, 8, 8)
	assert.Equal(t, 0, st.Evicted)

	hit, err := lru.Lookup([]int32{1, 2, 3, 4}, nil, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, hit.Tokens)
	hit, err = shared.Lookup([]int32{1, 2, 3, 4}, nil, 0)
	require.NoError(t, err)
	assert.Equal(t, 4, hit.Tokens)
}

// TestEvictSharedProtectsSharedPrefix walks the policy's arithmetic on a
// system prompt S = [1 2 3 4] (pages of 2 tokens, 6 usable pages), all
// prompts recomputing nothing:
//
//	Add 1: A = S+[5 6] takes pages 1 2 3 (S0 S1 A0), all private; freed
//	       tail first, the private queue is 3 2 1. Private slots at the
//	       Add: 0.
//	Add 2: B = S+[7 8] hits S0 S1 (2 private hits) and its next page
//	       differs from A0, the first page registered after S1: S0 and
//	       S1 are shared. Slots +3. B0 is page 4. Freed: private 3 4,
//	       shared 2 1.
//	Add 3: D = [9 9 9 9] takes pages 5 6. Slots +2. Freed: private
//	       3 4 6 5.
//	Add 4: E = [8 8 8 8 8 8] needs 3 pages, none keyless. Slots +4 = 9.
//	       The private rate is (2+1)/(9+10) = 0.158; S1 was cached at
//	       Add 1 and hit once: 1/(4-1+1) = 0.25 >= 1.5*0.158 = 0.237, so
//	       the private pages 3, 4, 6 go.
//
// LRU instead evicts A0, B0 and S1 (freed before D), so the prompt hits
// only S0.
func TestEvictSharedProtectsSharedPrefix(t *testing.T) {
	lru, shared := both(t, 7, 2)
	for _, p := range []*Pool{lru, shared} {
		run(t, p, 1, 1, 2, 3, 4, 5, 6)
		st := run(t, p, 2, 1, 2, 3, 4, 7, 8)
		require.Equal(t, 4, st.HitTokens)
		run(t, p, 3, 9, 9, 9, 9)
	}
	e := shared.ev.(*sharedEvictor)
	assert.Equal(t, []bool{false, true, true, false, false, false, false}, e.shared)
	assert.Equal(t, int64(2), e.privateHits)

	st, err := shared.Add(4, Request{Tokens: []int32{8, 8, 8, 8, 8, 8}})
	require.NoError(t, err)
	assert.Equal(t, 3, st.Evicted)
	pages, _, _ := shared.BlockTable(4)
	assert.Equal(t, []int32{3, 4, 6}, pages)
	assert.Equal(t, int64(9), e.privateSlots)

	st, err = lru.Add(4, Request{Tokens: []int32{8, 8, 8, 8, 8, 8}})
	require.NoError(t, err)
	assert.Equal(t, 3, st.Evicted)
	pages, _, _ = lru.BlockTable(4)
	assert.Equal(t, []int32{3, 4, 2}, pages)

	for p, want := range map[*Pool]int{lru: 2, shared: 4} {
		hit, err := p.Lookup([]int32{1, 2, 3, 4, 0}, nil, 1)
		require.NoError(t, err)
		assert.Equal(t, want, hit.Tokens)
	}
}

// TestEvictSharedGivesUpStalePrefix: a shared prefix that stops being hit
// while a conversation keeps hitting its own pages loses its protection.
// Same start as TestEvictSharedProtectsSharedPrefix up to Add 3 (S0 S1 =
// pages 1 2 shared, hit once, cached at Add 1; private queue 3 4 6 5,
// 2 private hits, 5 slots); then C = [9 9 9 9] is replayed 6 times
// (Adds 4..9), each a full hit of its 2 private pages needing no new
// page: 14 private hits, 5+6*4 = 29 slots. At Add 10, slots 33: S1's
// rate is 1/(10-1+1) = 0.1, under 1.5*(14+1)/(33+10) = 0.52, so its one
// new page is S1's, ahead of the private head A0 (page 3).
func TestEvictSharedGivesUpStalePrefix(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 7, PageSize: 2, PrefixCaching: true, Eviction: EvictShared})
	e := p.ev.(*sharedEvictor)
	run(t, p, 1, 1, 2, 3, 4, 5, 6)
	run(t, p, 2, 1, 2, 3, 4, 7, 8)
	run(t, p, 3, 9, 9, 9, 9)
	for i := range 6 {
		st := run(t, p, SeqID(10+i), 9, 9, 9, 9)
		require.Equal(t, 4, st.HitTokens)
		require.Zero(t, st.NewPages)
	}
	assert.Equal(t, int64(14), e.privateHits)
	assert.Equal(t, int64(29), e.privateSlots)
	st, err := p.Add(20, Request{Tokens: []int32{7, 7}})
	require.NoError(t, err)
	assert.Equal(t, 1, st.Evicted)
	pages, _, _ := p.BlockTable(20)
	assert.Equal(t, []int32{2}, pages)
	assert.Equal(t, int64(33), e.privateSlots)
}

// TestSharedEvictorStale checks the protection rule on hand-computed
// counters: hits/(clock-since+1) < 1.5*(privateHits+1)/(privateSlots+10).
func TestSharedEvictorStale(t *testing.T) {
	for _, tt := range []struct {
		hits                      int32
		since, clock              int64
		privateHits, privateSlots int64
		stale                     bool
	}{
		{hits: 1, since: 1, clock: 4, privateHits: 2, privateSlots: 9, stale: false},   // 0.25 vs 0.237
		{hits: 1, since: 1, clock: 5, privateHits: 2, privateSlots: 9, stale: true},    // 0.2 vs 0.237
		{hits: 0, since: 3, clock: 3, privateHits: 0, privateSlots: 0, stale: true},    // 0 vs 0.15
		{hits: 3, since: 1, clock: 20, privateHits: 0, privateSlots: 20, stale: false}, // 0.15 vs 0.05
		{hits: 3, since: 1, clock: 20, privateHits: 8, privateSlots: 80, stale: true},  // 0.15 vs 0.1667
	} {
		e := newSharedEvictor(make([]bool, 2), make([]Key, 2))
		e.hitCount[1], e.since[1], e.clock = tt.hits, tt.since, tt.clock
		e.privateHits, e.privateSlots = tt.privateHits, tt.privateSlots
		assert.Equal(t, tt.stale, e.stale(1), "%+v", tt)
	}
}

// TestEvictSharedEvictAndReset: Evict and ResetPrefixCache turn cached
// free pages into keyless ones, which the policy then takes first.
func TestEvictSharedEvictAndReset(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 5, PageSize: 2, PrefixCaching: true, Eviction: EvictShared})
	e := p.ev.(*sharedEvictor)
	run(t, p, 1, 1, 2, 3, 4)
	run(t, p, 2, 1, 2, 5, 6) // page 1 shared; pages 1 2 3 cached, 4 keyless
	assert.Equal(t, [numQueues]int{1, 2, 1}, e.n)
	assert.Equal(t, 1, p.Evict(1)) // LRU order: page 2 (A's tail, freed first)
	assert.Equal(t, [numQueues]int{2, 1, 1}, e.n)
	assert.False(t, p.hashed[2])
	require.NoError(t, p.ResetPrefixCache())
	assert.Equal(t, [numQueues]int{4, 0, 0}, e.n)
	assert.Equal(t, []bool{false, false, false, false, false}, e.shared)
	require.NoError(t, p.checkInvariants())
}

// TestSharedEvictorGhosts walks the ghost ring of a 3-page pool by hand:
// it holds the keys of the last 3 private pages evicted; registering a
// key with an unused occurrence counts one private hit and uses the
// oldest occurrence; an occurrence leaving the ring takes its use along.
func TestSharedEvictorGhosts(t *testing.T) {
	e := newSharedEvictor(make([]bool, 3), make([]Key, 3))
	reg := func(k Key) int64 {
		before := e.privateHits
		e.registered(1, none, k)
		return e.privateHits - before
	}
	assert.Zero(t, reg(1), "no ghost yet")
	e.ghost(1)
	e.ghost(2)
	assert.Equal(t, int64(1), reg(1), "K1 was evicted")
	assert.Zero(t, reg(1), "its one occurrence is used")
	e.ghost(1) // ring: 1 2 1, K1 used once of twice
	assert.Equal(t, int64(1), reg(1))
	assert.Zero(t, reg(1))
	e.ghost(3) // ring: 3 2 1; the first K1 leaves with its use
	assert.Equal(t, ghostCount{in: 1, used: 1}, e.ghosts[1])
	e.ghost(4) // ring: 3 4 1; K2 leaves unused
	_, ok := e.ghosts[2]
	assert.False(t, ok)
	assert.Zero(t, reg(2), "K2 left the ring")
	assert.Equal(t, int64(1), reg(3))
	e.ghost(5) // ring: 3 4 5
	_, ok = e.ghosts[1]
	assert.False(t, ok)
	assert.Len(t, e.ghosts, 3)
}
