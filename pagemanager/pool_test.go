package pagemanager

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refHash is an independent implementation of the documented key
// encoding, written with encoding/binary.Write over a bytes.Buffer.
func refHash(t *testing.T, parent uint64, tokens []int32, extra []string) string {
	var b bytes.Buffer
	b.WriteByte(1)
	require.NoError(t, binary.Write(&b, binary.LittleEndian, parent))
	require.NoError(t, binary.Write(&b, binary.LittleEndian, uint32(len(tokens))))
	for _, tok := range tokens {
		require.NoError(t, binary.Write(&b, binary.LittleEndian, uint32(tok)))
	}
	require.NoError(t, binary.Write(&b, binary.LittleEndian, uint32(len(extra))))
	for _, e := range extra {
		require.NoError(t, binary.Write(&b, binary.LittleEndian, uint32(len(e))))
		b.WriteString(e)
	}
	d := sha256.Sum256(b.Bytes())
	le := d[:8]
	be := []byte{le[7], le[6], le[5], le[4], le[3], le[2], le[1], le[0]}
	return hex.EncodeToString(be)
}

// TestHashPageVectors pins the key function. The expected keys were
// computed with coreutils: the message bytes written by printf from the
// documented layout, piped to sha256sum, the first 8 digest bytes read
// little-endian. refHash recomputes them independently.
func TestHashPageVectors(t *testing.T) {
	const v1 = 0x890f1f8348ddb55b
	tests := []struct {
		name   string
		parent Key
		tokens []int32
		extra  []string
		want   string
	}{
		{"first page", RootKey, []int32{1, 2, 3, 4}, nil, "890f1f8348ddb55b"},
		{"chained", v1, []int32{5, 6, 7, 8}, nil, "0e555dfa8d7e060f"},
		{"adapter", RootKey, []int32{1, 2, 3, 4}, []string{"lora-a"}, "31278469b74487b0"},
		{"parent, wide tokens, two extra keys", 0x0123456789abcdef, []int32{31999, 0, -1}, []string{"", "salt:x"}, "6bac861a782f443a"},
		{"empty page", RootKey, nil, nil, "ea4eeecbea78d2f0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := HashPage(tt.parent, tt.tokens, tt.extra)
			assert.Equal(t, tt.want, got.String())
			assert.Equal(t, tt.want, refHash(t, uint64(tt.parent), tt.tokens, tt.extra))
		})
	}
	// Extra keys are length-prefixed: moving a byte across keys changes the key.
	assert.NotEqual(t, HashPage(RootKey, nil, []string{"ab", "c"}), HashPage(RootKey, nil, []string{"a", "bc"}))
	assert.Equal(t, HashPage(RootKey, []int32{1}, nil), HashPage(RootKey, []int32{1}, []string{}), "nil and empty extra keys are the same")
}

func TestChainKeys(t *testing.T) {
	toks := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	keys := ChainKeys(toks, 4, []string{"s"})
	require.Len(t, keys, 2, "the partial third page has no key")
	k1 := HashPage(RootKey, toks[:4], []string{"s"})
	assert.Equal(t, []Key{k1, HashPage(k1, toks[4:8], []string{"s"})}, keys)
	assert.Empty(t, ChainKeys(toks[:3], 4, nil))
	assert.Panics(t, func() { ChainKeys(toks, 0, nil) })

	// The pool registers exactly these keys.
	p := newTestPool(t, PoolConfig{NumPages: 4, PageSize: 4, PrefixCaching: true})
	_, err := p.Add(1, Request{Tokens: toks, Extra: []string{"s"}})
	require.NoError(t, err)
	pages, _, _ := p.BlockTable(1)
	assert.Equal(t, keys, []Key{p.key[pages[0]], p.key[pages[1]]})
}

func TestPoolConfigValidate(t *testing.T) {
	tests := []struct {
		cfg PoolConfig
		ok  bool
	}{
		{PoolConfig{NumPages: 2, PageSize: 1}, true},
		{PoolConfig{NumPages: 2, PageSize: 16, PrefixCaching: true, Hybrid: true, Events: true}, true},
		{PoolConfig{NumPages: 1, PageSize: 16}, false},
		{PoolConfig{NumPages: 1 << 31, PageSize: 16}, false},
		{PoolConfig{NumPages: 8, PageSize: 0}, false},
		{PoolConfig{NumPages: 8, PageSize: -4}, false},
		{PoolConfig{NumPages: 8, PageSize: 4, Hybrid: true}, false},
		{PoolConfig{NumPages: 8, PageSize: 4, Events: true}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if tt.ok {
			assert.NoError(t, err, "%+v", tt.cfg)
			continue
		}
		assert.ErrorIs(t, err, ErrInvalidConfig, "%+v", tt.cfg)
		_, err = NewPool(tt.cfg)
		assert.ErrorIs(t, err, ErrInvalidConfig, "%+v", tt.cfg)
	}
}

// newTestPool returns a pool whose invariants are checked when the test
// ends.
func newTestPool(t *testing.T, cfg PoolConfig) *Pool {
	t.Helper()
	p, err := NewPool(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.checkInvariants()) })
	return p
}

// TestPoolAllOrNothing checks that a failed Add or Append changes nothing:
// not the state, not the counters, not the events.
func TestPoolAllOrNothing(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 6, PageSize: 2, PrefixCaching: true, Events: true})
	_, err := p.Add(1, Request{Tokens: []int32{1, 2, 3, 4, 5}})
	require.NoError(t, err)
	require.NoError(t, p.Free(1)) // pages 3 2* 1* cached at the tail
	_, err = p.Add(2, Request{Tokens: []int32{9, 9, 9}})
	require.NoError(t, err) // takes 4 5: free is 3 2* 1*
	require.NoError(t, p.Fork(2, 3))
	p.TakeEvents()
	before, stats := p.Describe(), p.Stats()

	// The 2 hit pages are free pages too: 2 + 2 new > 3 free.
	_, err = p.Add(4, Request{Tokens: []int32{1, 2, 3, 4, 7, 7, 7}})
	require.ErrorIs(t, err, ErrNoFreePages)
	assert.Contains(t, err.Error(), "sequence 4 needs 4 pages for 7 tokens (4 hit), 3 free of 5")
	// A copy of the shared partial page plus 3 pages > 3 free.
	_, err = p.Append(3, []int32{1, 2, 3, 4, 5, 6})
	require.ErrorIs(t, err, ErrNoFreePages)
	assert.Contains(t, err.Error(), "sequence 3 needs 4 pages to append 6 tokens to 3, 3 free of 5")

	assert.Equal(t, before, p.Describe())
	assert.Equal(t, stats, p.Stats())
	assert.Empty(t, p.TakeEvents())
	require.NoError(t, p.checkInvariants())

	// Exactly enough works.
	st, err := p.Add(4, Request{Tokens: []int32{1, 2, 3, 4, 7}})
	require.NoError(t, err)
	assert.Equal(t, Step{HitTokens: 4, NewPages: 1}, st)
	assert.Zero(t, p.NumFree())
}

// TestPoolVLLMRules checks the rules a vLLM replay depends on, with the
// counters: lazy eviction counted when a cached page is taken, not when an
// uncached one is; decode-filled pages registered; tail-first freeing.
func TestPoolVLLMRules(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 5, PageSize: 2, PrefixCaching: true})
	_, err := p.Add(1, Request{Tokens: []int32{1, 2, 3}, Recompute: 1})
	require.NoError(t, err)
	_, err = p.Append(1, []int32{4})
	require.NoError(t, err)
	assert.Equal(t, 2, p.NumCached(), "the page filled by decode is registered")
	_, err = p.Append(1, []int32{5})
	require.NoError(t, err)
	require.NoError(t, p.Free(1))
	assert.Equal(t, []int32{4, 3, 2, 1}, p.free.appendTo(nil), "tail page first")

	// A new conversation turn hits through the reply.
	st, err := p.Add(2, Request{Tokens: []int32{1, 2, 3, 4, 5, 6}, Recompute: 1})
	require.NoError(t, err)
	assert.Equal(t, Step{HitTokens: 4, NewPages: 1}, st, "page 4 (uncached) taken: no eviction")

	st, err = p.Add(3, Request{Tokens: []int32{8, 8}})
	require.NoError(t, err)
	assert.Equal(t, Step{NewPages: 1}, st)
	require.NoError(t, p.Free(3))
	require.NoError(t, p.Free(2))
	assert.Equal(t, []int32{3, 4, 2, 1}, p.free.appendTo(nil))
	st, err = p.Add(4, Request{Tokens: []int32{7, 7, 7, 7}})
	require.NoError(t, err)
	assert.Equal(t, Step{NewPages: 2, Evicted: 2}, st, "pages 3 (8 8) and 4 (5 6) were cached")
	assert.Equal(t, Stats{Requests: 4, PromptTokens: 15, HitTokens: 4, Evictions: 2}, p.Stats())
	assert.InDelta(t, 4.0/15, p.Stats().HitRate(), 1e-12)
	assert.Zero(t, Stats{}.HitRate())
}

// TestPoolWithoutCaching checks that a pool without prefix caching never
// keys, hits or evicts.
func TestPoolWithoutCaching(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 4, PageSize: 2})
	for range 3 {
		st, err := p.Add(1, Request{Tokens: []int32{1, 2, 3, 4}})
		require.NoError(t, err)
		assert.Equal(t, Step{NewPages: 2}, st)
		h, err := p.Lookup([]int32{1, 2, 3, 4}, nil, 0)
		require.NoError(t, err)
		assert.Equal(t, Hit{}, h)
		require.NoError(t, p.Free(1))
	}
	assert.Zero(t, p.NumCached())
	assert.Equal(t, Stats{Requests: 3, PromptTokens: 12}, p.Stats())
	assert.Nil(t, p.TakeEvents())
}

func TestPoolAccessors(t *testing.T) {
	cfg := PoolConfig{NumPages: 6, PageSize: 4, PrefixCaching: true}
	p := newTestPool(t, cfg)
	assert.Equal(t, cfg, p.Config())
	_, err := p.Add(7, Request{Tokens: []int32{1, 2, 3, 4, 5}})
	require.NoError(t, err)
	require.NoError(t, p.Fork(7, 3))
	assert.Equal(t, []SeqID{3, 7}, p.Sequences())
	assert.Equal(t, 2, p.NumUsed())
	assert.Equal(t, 3, p.NumFree())
	assert.Equal(t, 1, p.NumCached())
	assert.Equal(t, 2, p.RefCount(1))
	assert.Zero(t, p.RefCount(0))
	assert.Zero(t, p.RefCount(99))
	assert.Zero(t, p.RefCount(-1))
	pages, n, ok := p.BlockTable(3)
	require.True(t, ok)
	assert.Equal(t, []int32{1, 2}, pages)
	assert.Equal(t, 5, n)
	pages[0] = 99 // a copy
	pages, _, _ = p.BlockTable(3)
	assert.Equal(t, []int32{1, 2}, pages)
	_, _, ok = p.BlockTable(4)
	assert.False(t, ok)
	assert.Equal(t, p.Describe(), p.String())
	_, err = p.Lookup([]int32{1}, nil, 2)
	assert.ErrorIs(t, err, ErrInvalidRequest)
	_, err = p.Append(7, nil)
	assert.ErrorIs(t, err, ErrInvalidRequest)
	assert.Equal(t, "2->5 (3 tokens)", Copy{Src: 2, Dst: 5, Tokens: 3}.String())
	assert.Equal(t, "00000000000000ff", Key(255).String())
}

// TestPoolRandomInvariants drives a pool with random operations at the
// sizes of real workloads (the model test uses tiny ones) and checks the
// invariants after each.
func TestPoolRandomInvariants(t *testing.T) {
	for _, ev := range []Eviction{EvictLRU, EvictShared, EvictLineage} {
		t.Run(ev.String(), func(t *testing.T) { poolRandomInvariants(t, ev) })
	}
}

func poolRandomInvariants(t *testing.T, ev Eviction) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := newTestPool(t, PoolConfig{NumPages: 64, PageSize: 4, PrefixCaching: true, Hybrid: true, Events: true, Eviction: ev})
	prefixes := [][]int32{randTokens(rng, 40, 5), randTokens(rng, 24, 5)}
	var live []SeqID
	next := SeqID(1)
	for i := range 3000 {
		switch op := rng.IntN(12); {
		case op < 3:
			pre := prefixes[rng.IntN(2)]
			toks := append(slices.Clone(pre[:rng.IntN(len(pre))+1]), randTokens(rng, rng.IntN(20), 5)...)
			if _, err := p.Add(next, Request{Tokens: toks, Recompute: 1}); err == nil {
				live = append(live, next)
			} else {
				require.ErrorIs(t, err, ErrNoFreePages)
			}
			next++
		case op < 6 && len(live) > 0:
			if _, err := p.Append(live[rng.IntN(len(live))], randTokens(rng, 1+rng.IntN(6), 5)); err != nil {
				require.ErrorIs(t, err, ErrNoFreePages)
			}
		case op < 7 && len(live) > 0:
			require.NoError(t, p.Fork(live[rng.IntN(len(live))], next))
			live = append(live, next)
			next++
		case op < 8 && len(live) > 0:
			id := live[rng.IntN(len(live))]
			_, n, _ := p.BlockTable(id)
			if n >= 4 {
				_, err := p.PutCheckpoint(id, 4*(1+rng.IntN(n/4)), Checkpoint(i+1))
				require.NoError(t, err)
			}
		case op < 11 && len(live) > 0:
			j := rng.IntN(len(live))
			require.NoError(t, p.Free(live[j]))
			live = slices.Delete(live, j, j+1)
		default:
			p.Evict(rng.IntN(3))
		}
		require.NoError(t, p.checkInvariants(), "op %d", i)
	}
	st := p.Stats()
	t.Logf("%+v, %d live", st, len(live))
	assert.Positive(t, st.HitTokens, "the workload shares prefixes")
	assert.Positive(t, st.Evictions, "the workload overflows the pool")
	assert.Positive(t, st.Copies, "forks diverge")
}

func randTokens(rng *rand.Rand, n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(rng.IntN(vocab))
	}
	return t
}

// TestHybridHitsAreRestorable checks, on random traffic, that every hit a
// hybrid pool reports ends at a boundary whose checkpoint is the one it
// returns, and that the checkpoint belongs to exactly that prefix.
func TestHybridHitsAreRestorable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	p := newTestPool(t, PoolConfig{NumPages: 24, PageSize: 2, PrefixCaching: true, Hybrid: true})
	owner := map[Checkpoint][]int32{} // the prefix each stored checkpoint holds
	next := Checkpoint(1)
	for i := range 2000 {
		toks := randTokens(rng, 1+rng.IntN(12), 2)
		id := SeqID(i)
		st, err := p.Add(id, Request{Tokens: toks})
		if err != nil {
			require.ErrorIs(t, err, ErrNoFreePages)
			continue
		}
		if st.HitTokens > 0 {
			require.NotEqual(t, NoCheckpoint, st.Restore, "hit without a checkpoint")
			require.Equal(t, owner[st.Restore], toks[:st.HitTokens], "checkpoint of another prefix")
		} else {
			require.Equal(t, NoCheckpoint, st.Restore)
		}
		for b := 2; b <= len(toks); b += 2 {
			if rng.IntN(3) == 0 {
				stored, err := p.PutCheckpoint(id, b, next)
				require.NoError(t, err)
				if stored {
					owner[next] = slices.Clone(toks[:b])
				}
				next++
			}
		}
		require.NoError(t, p.Free(id))
		for _, c := range p.TakeDroppedCheckpoints() {
			delete(owner, c)
		}
		require.Len(t, owner, p.NumCheckpoints())
	}
}
