package pagemanager

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEventsMirrorTable replays the event stream of random traffic into
// a set of keys, as an external indexer would, and checks after every
// operation that the set is exactly the pool's cached keys, that sequence
// numbers have no gap, and that every BlockStored can be re-hashed from its
// own fields.
func TestEventsMirrorTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	p := newTestPool(t, PoolConfig{NumPages: 16, PageSize: 2, PrefixCaching: true, Events: true})
	sub := NewSubscriber(1)
	mirror := map[Key]bool{}
	var live []SeqID
	counts := map[string]int{}
	for i := range 3000 {
		if i%300 == 299 {
			for _, id := range live {
				require.NoError(t, p.Free(id))
			}
			live = live[:0]
			require.NoError(t, p.ResetPrefixCache())
		}
		switch op := rng.IntN(10); {
		case op < 4:
			var extra []string
			if rng.IntN(3) == 0 {
				extra = []string{"tenant-b"}
			}
			if _, err := p.Add(SeqID(i), Request{Tokens: randTokens(rng, 1+rng.IntN(9), 2), Extra: extra, Recompute: rng.IntN(2)}); err == nil {
				live = append(live, SeqID(i))
			}
		case op < 6 && len(live) > 0:
			_, _ = p.Append(live[rng.IntN(len(live))], randTokens(rng, 1+rng.IntN(3), 2))
		case op < 7 && len(live) > 0:
			require.NoError(t, p.Fork(live[rng.IntN(len(live))], SeqID(i)))
			live = append(live, SeqID(i))
		case op < 9 && len(live) > 0:
			j := rng.IntN(len(live))
			require.NoError(t, p.Free(live[j]))
			live = slices.Delete(live, j, j+1)
		default:
			p.Evict(1 + rng.IntN(2))
		}
		for _, e := range p.TakeEvents() {
			require.NoError(t, sub.Observe(e))
			switch e := e.(type) {
			case BlockStored:
				counts["stored"]++
				require.Equal(t, 2, e.PageSize)
				require.Len(t, e.TokenIDs, 2*len(e.Hashes))
				parent := e.Parent
				for j, k := range e.Hashes {
					parent = HashPage(parent, e.TokenIDs[2*j:2*j+2], e.ExtraKeys)
					require.Equal(t, k, parent, "BlockStored hash %d", j)
					mirror[k] = true
				}
			case BlockRemoved:
				counts["removed"]++
				for _, k := range e.Hashes {
					require.True(t, mirror[k], "removed key %s never stored", k)
					delete(mirror, k)
				}
			case AllBlocksCleared:
				counts["cleared"]++
				clear(mirror)
			}
		}
		require.Len(t, mirror, len(p.table), "op %d", i)
		for k := range p.table {
			require.True(t, mirror[k], "op %d: cached key %s not in the mirror", i, k)
		}
	}
	assert.Zero(t, sub.Missed())
	t.Log(counts)
	for _, c := range []string{"stored", "removed", "cleared"} {
		assert.Positive(t, counts[c], c)
	}
}

func TestSubscriber(t *testing.T) {
	s := NewSubscriber(1)
	assert.Equal(t, uint64(1), s.Next())
	require.NoError(t, s.Observe(BlockStored{Seq: 1}))
	require.NoError(t, s.Observe(BlockRemoved{Seq: 2}))

	err := s.Observe(AllBlocksCleared{Seq: 4})
	require.ErrorIs(t, err, ErrEventGap)
	assert.EqualError(t, err, "pagemanager: kv event gap: event 3 missed (got 4)")
	assert.Equal(t, uint64(5), s.Next(), "resynchronised on the event after the gap")

	err = s.Observe(BlockStored{Seq: 9})
	assert.EqualError(t, err, "pagemanager: kv event gap: events 5..8 missed (got 9)")
	assert.Equal(t, uint64(5), s.Missed())

	err = s.Observe(BlockStored{Seq: 9})
	require.ErrorIs(t, err, ErrEventOrder)
	assert.EqualError(t, err, "pagemanager: kv event out of order: got event 9, expected 10")
	err = s.Observe(BlockStored{Seq: 2})
	require.ErrorIs(t, err, ErrEventOrder)
	require.NoError(t, s.Observe(BlockStored{Seq: 10}), "a repeated event is ignored")
	assert.Equal(t, uint64(5), s.Missed())

	late := NewSubscriber(0)
	require.NoError(t, late.Observe(BlockRemoved{Seq: 41}), "a late join starts anywhere")
	require.ErrorIs(t, late.Observe(BlockRemoved{Seq: 43}), ErrEventGap)

	fresh := NewSubscriber(1)
	require.ErrorIs(t, fresh.Observe(BlockStored{Seq: 2}), ErrEventGap, "event 1 was lost")
}

// TestEventSequenceNumbers checks numbering across TakeEvents calls and
// that a pool without Events keeps nothing.
func TestEventSequenceNumbers(t *testing.T) {
	p := newTestPool(t, PoolConfig{NumPages: 4, PageSize: 1, PrefixCaching: true, Events: true})
	_, err := p.Add(1, Request{Tokens: []int32{1, 2}})
	require.NoError(t, err)
	first := p.TakeEvents()
	require.Len(t, first, 1)
	assert.Equal(t, uint64(1), first[0].EventSeq())
	require.NoError(t, p.Free(1))
	assert.Empty(t, p.TakeEvents(), "freeing keeps the keys: no event")
	_, err = p.Add(2, Request{Tokens: []int32{5, 6, 7}}) // takes 3, then 2* and 1*
	require.NoError(t, err)
	require.NoError(t, p.Free(2))
	require.NoError(t, p.ResetPrefixCache())
	evs := p.TakeEvents()
	require.Len(t, evs, 3)
	k := ChainKeys([]int32{1, 2}, 1, nil)
	assert.Equal(t, BlockRemoved{Seq: 2, Hashes: []Key{k[1], k[0]}}, evs[0], "pages 2 then 1 evicted")
	assert.Equal(t, BlockRemoved{}.withSeq(2).EventSeq(), evs[0].EventSeq())
	stored := evs[1].(BlockStored)
	assert.Equal(t, uint64(3), stored.Seq)
	assert.Equal(t, ChainKeys([]int32{5, 6, 7}, 1, nil), stored.Hashes)
	assert.Equal(t, []int32{5, 6, 7}, stored.TokenIDs)
	assert.Equal(t, RootKey, stored.Parent)
	assert.Equal(t, AllBlocksCleared{Seq: 4}, evs[2])
}
