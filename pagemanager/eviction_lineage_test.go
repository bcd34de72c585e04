package pagemanager

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lineageOf returns the evictor of an EvictLineage pool.
func lineageOf(t *testing.T, p *Pool) *lineageEvictor {
	t.Helper()
	e, ok := p.ev.(*lineageEvictor)
	require.True(t, ok, "pool evictor is %T", p.ev)
	return e
}

// lineageStart runs, on a fresh pool of 8 usable pages of 2 tokens,
// conversation A's turn 0 (1 2 3 4: pages 1 2), B's turn 0 (11..14: pages
// 3 4) and B's turn 1 (11..16: hits pages 3 4, takes page 5). After it,
// pages 6 7 8 are keyless, A's pages are in turn class 0, B's in class 1.
func lineageStart(t *testing.T, cfg PoolConfig) *Pool {
	t.Helper()
	cfg.NumPages, cfg.PageSize, cfg.PrefixCaching = 9, 2, true
	p := newTestPool(t, cfg)
	run(t, p, 1, 1, 2, 3, 4)
	run(t, p, 2, 11, 12, 13, 14)
	st := run(t, p, 3, 11, 12, 13, 14, 15, 16)
	require.Equal(t, 4, st.HitTokens)
	return p
}

// TestEvictLineageLearnsTurns: a prompt that contains the last page of a
// freed sequence is that sequence's next turn. B's turn 1 is recognised:
// one continuation of turn 0 after 1 Add, B's pages move to class 1, and
// B's record is now its turn 1, under its last page's key. Before any
// observation the priors hold: a turn continues with probability 0.8, the
// next turn comes after 16 Adds.
func TestEvictLineageLearnsTurns(t *testing.T) {
	p, err := NewPool(PoolConfig{NumPages: 9, PageSize: 2, PrefixCaching: true, Eviction: EvictLineage})
	require.NoError(t, err)
	fresh := lineageOf(t, p)
	assert.InDelta(t, 0.8, fresh.continues(0), 1e-12)
	assert.InDelta(t, 1.0/16, fresh.rate(), 1e-12)

	p = lineageStart(t, PoolConfig{Eviction: EvictLineage})
	e := lineageOf(t, p)
	assert.Equal(t, int64(1), e.cont[0])
	assert.Equal(t, int64(1), e.gaps)
	assert.Equal(t, int64(1), e.gapSum)
	assert.Equal(t, []int8{0, 0, 1, 1, 1}, e.cls[1:6], "classes of pages 1..5")
	assert.Equal(t, int8(lqTurn0+1), e.q.in[5], "B's last page is queued in class 1")
	require.Len(t, e.records, 2, "A's turn 0 and B's turn 1")
	assert.Equal(t, lineageRecord{turn: 1, at: 3}, e.records[p.key[5]])
	assert.InDelta(t, (1+1.6)/(1+2.0), e.continues(0), 1e-12)
	assert.InDelta(t, 51.0/(1+800), e.rate(), 1e-12)
}

// TestEvictLineageEvictsEndedConversation: once the pool has learned that
// turn 0 always continues and turn 1 never does, a new prompt of 5 pages
// takes the 3 keyless pages, then B's (turn 1, the tail first) though A's
// pages were freed earlier; A's next turn hits its whole history. LRU
// evicts A's two pages, the least recently freed.
func TestEvictLineageEvictsEndedConversation(t *testing.T) {
	lin := lineageStart(t, PoolConfig{Eviction: EvictLineage})
	e := lineageOf(t, lin)
	e.cont[0] += 100
	e.ended[1] += 100
	lru := lineageStart(t, PoolConfig{})
	for _, tt := range []struct {
		name      string
		p         *Pool
		evicted   []int32 // pages whose keys the new prompt drops
		hitTokens int     // A's turn 1
	}{{"lineage", lin, []int32{5, 4}, 4}, {"lru", lru, []int32{2, 1}, 0}} {
		keys := map[int32]Key{}
		for _, pg := range tt.evicted {
			keys[pg] = tt.p.key[pg]
		}
		st := run(t, tt.p, 4, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30)
		assert.Equal(t, 2, st.Evicted, tt.name)
		for pg, k := range keys {
			_, ok := tt.p.cachedPage(k)
			assert.False(t, ok, "%s: page %d's key is still cached", tt.name, pg)
		}
		st = run(t, tt.p, 5, 1, 2, 3, 4, 5, 6)
		assert.Equal(t, tt.hitTokens, st.HitTokens, tt.name)
	}
	assert.Equal(t, int64(102), e.cont[0], "A's turn 1 is recognised")
	assert.Equal(t, int8(1), e.cls[1])
}

// TestEvictLineageExpiry: a sequence not continued within 8 mean gaps
// counts as a last turn; when it is continued after all, the count moves
// back to the continued ones and the next turn gets the next class.
func TestEvictLineageExpiry(t *testing.T) {
	p := lineageStart(t, PoolConfig{Eviction: EvictLineage})
	e := lineageOf(t, p)
	horizon := int(8/e.rate()) + 1 // 126 Adds
	for i := range horizon {
		run(t, p, SeqID(10+i), int32(1000+2*i), int32(1001+2*i)) // new one-page conversations
	}
	assert.Equal(t, int64(1), e.ended[1], "B's turn 1 expired")
	assert.Positive(t, e.ended[0], "the oldest one-page conversations expired")

	// B's turn 2, its pages long evicted: recognised through its keys.
	_, err := p.Add(9, Request{Tokens: []int32{11, 12, 13, 14, 15, 16, 17, 18}})
	require.NoError(t, err)
	assert.Zero(t, e.ended[1])
	assert.Equal(t, int64(1), e.cont[1])
	pages, _, _ := p.BlockTable(9)
	for _, pg := range pages {
		assert.Equal(t, int8(2), e.cls[pg], "page %d", pg)
	}
	require.NoError(t, p.Free(9))
}

// TestEvictLineageForgetsOldest: beyond its record cap the evictor
// forgets the oldest records, counting them as last turns.
func TestEvictLineageForgetsOldest(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 9, PageSize: 2, PrefixCaching: true, Eviction: EvictLineage})
	e := lineageOf(t, p)
	e.maxRecs = 5
	for i := range 8 {
		run(t, p, SeqID(i), int32(2*i), int32(2*i+1))
	}
	assert.Len(t, e.records, 5)
	assert.Equal(t, int64(3), e.ended[0])
}

// TestEvictLineageMarksSharedPrefix: a new conversation that hits pages
// (a system prompt) marks them shared; they are queued apart from the
// turn classes and scored by their own hits.
func TestEvictLineageMarksSharedPrefix(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 9, PageSize: 2, PrefixCaching: true, Eviction: EvictLineage})
	e := lineageOf(t, p)
	run(t, p, 1, 1, 2, 3, 4, 5, 6) // A: system prompt 1..4, then its own page
	st := run(t, p, 2, 1, 2, 3, 4, 7, 8)
	require.Equal(t, 4, st.HitTokens)
	for pg := int32(1); pg <= 2; pg++ {
		assert.True(t, e.shared[pg], "page %d", pg)
		assert.Equal(t, int8(lqShared), e.q.in[pg], "page %d", pg)
		assert.Equal(t, int32(1), e.hitCount[pg], "page %d", pg)
	}
	for _, pg := range []int32{3, 4} {
		assert.False(t, e.shared[pg], "page %d", pg)
		assert.Equal(t, int8(lqTurn0), e.q.in[pg], "page %d", pg)
	}
	require.NoError(t, p.ResetPrefixCache())
	assert.False(t, e.shared[1])
	assert.Equal(t, 8, e.q.n[lqEmpty], "reset: every page keyless")
}
