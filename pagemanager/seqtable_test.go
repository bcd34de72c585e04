package pagemanager

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSeqTable checks the sequence table against a Go map under random
// puts and removes, with ids from a small range (long probe runs, wrap
// around, id 0) and from the whole range, across growth.
func TestSeqTable(t *testing.T) {
	for _, span := range []uint64{40, 1 << 63} {
		rng := rand.New(rand.NewPCG(span, 7))
		var tab seqTable
		ref := map[SeqID]*sequence{}
		for i := range 20000 {
			id := SeqID(rng.Uint64N(span))
			switch rng.IntN(3) {
			case 0, 1:
				if ref[id] == nil {
					s := &sequence{n: i}
					tab.put(id, s)
					ref[id] = s
				}
			default:
				require.Same(t, ref[id], tab.remove(id), "remove %d", id)
				delete(ref, id)
			}
			require.Equal(t, len(ref), tab.len())
			if i%97 == 0 {
				for id, s := range ref {
					require.Same(t, s, tab.get(id), "get %d", id)
				}
				seen := 0
				tab.all(func(id SeqID, s *sequence) {
					require.Same(t, ref[id], s)
					seen++
				})
				require.Equal(t, len(ref), seen)
			}
		}
		require.Nil(t, tab.get(SeqID(span)), "absent id")
	}
	var empty seqTable
	require.Nil(t, empty.get(0))
	require.Nil(t, empty.remove(0))
}
