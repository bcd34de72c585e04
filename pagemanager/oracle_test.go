package pagemanager

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// futureEvictor is a test-only eviction policy that knows the trace ahead:
// for every key, the Adds (numbered from 1, skipped requests not counted)
// whose lookup may hit it. It bounds what an online policy can reach.
//
// With belady it takes the free page whose next use is furthest (never
// used again first; a tie goes to the deeper page, so a chain loses its
// tail first): Belady's MIN on pages, optimal up to the chain rule (a
// page is hit only through its whole prefix), which it respects anyway
// since a page's next use is never before its parent's. Without belady
// it is LRU that first takes a free page no later Add will hit
// ("dead first"): it knows which conversations have ended, not when the
// others come back. Either takes keyless and duplicate pages first.
type futureEvictor struct {
	p      *Pool
	belady bool
	uses   map[Key][]int64
	depth  map[Key]int
	clock  int64
	q      pageQueues
}

// never is the next use of a page no Add will hit.
const never = math.MaxInt64

func newFutureEvictor(p *Pool, reqs []chatRequest, belady bool) *futureEvictor {
	ps, usable := p.Config().PageSize, p.Config().NumPages-1
	e := &futureEvictor{p: p, belady: belady, uses: map[Key][]int64{}, depth: map[Key]int{}, q: newPageQueues(p.Config().NumPages, 1)}
	add := int64(0)
	for _, r := range reqs {
		if (len(r.Prompt)+len(r.Output)-1+ps-1)/ps > usable {
			continue // skipped: no Add
		}
		add++
		parent := RootKey
		for i := range (len(r.Prompt) - 1) / ps {
			k := HashPage(parent, r.Prompt[i*ps:(i+1)*ps], nil)
			e.uses[k] = append(e.uses[k], add)
			e.depth[k] = i
			parent = k
		}
	}
	for pg := p.free.head; pg != none; pg = p.free.next[pg] {
		e.q.push(0, pg)
	}
	return e
}

// next returns when free page pg is hit next, never if not.
func (e *futureEvictor) next(pg int32) int64 {
	if !e.p.hashed[pg] {
		return never
	}
	k := e.p.key[pg]
	if head, _ := e.p.cachedPage(k); head != pg {
		return never // a duplicate: lookups return the first page
	}
	u := e.uses[k]
	i, _ := slices.BinarySearch(u, e.clock+1)
	if i == len(u) {
		return never
	}
	return u[i]
}

func (e *futureEvictor) victim() int32 {
	best, bestNext, bestDepth := none, int64(-1), -1
	for pg := e.q.head[0]; pg != none; pg = e.q.next[pg] {
		n := e.next(pg)
		if !e.belady {
			if n == never {
				best = pg
				break
			}
			continue
		}
		d := e.depth[e.p.key[pg]]
		if n > bestNext || n == bestNext && d > bestDepth {
			best, bestNext, bestDepth = pg, n, d
		}
		if n == never && !e.p.hashed[pg] {
			break
		}
	}
	if best == none {
		best = e.q.head[0]
	}
	e.q.remove(best)
	return best
}

func (e *futureEvictor) tick()                        { e.clock++ }
func (e *futureEvictor) released(pg int32)            { e.q.push(0, pg) }
func (e *futureEvictor) taken(pg int32)               { e.q.remove(pg) }
func (e *futureEvictor) hits([]int32, Key, bool)      {}
func (e *futureEvictor) registered(int32, int32, Key) {}
func (e *futureEvictor) unregistered(int32)           {}
func (e *futureEvictor) reset()                       {}
func (e *futureEvictor) added([]int32, int)           {}
func (e *futureEvictor) freeing([]int32)              {}
func (e *futureEvictor) check(p *Pool) []error        { return e.q.check(p, "future eviction") }

// readChatTrace reads testdata/traces/chat-multiturn.jsonl.
func readChatTrace(t testing.TB) []chatRequest {
	f, err := os.Open(filepath.Join("testdata", "traces", "chat-multiturn.jsonl"))
	require.NoError(t, err)
	defer f.Close()
	var reqs []chatRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var q chatRequest
		require.NoError(t, json.Unmarshal(sc.Bytes(), &q))
		reqs = append(reqs, q)
	}
	require.NoError(t, sc.Err())
	return reqs
}

// continuation returns, per turn class, the fraction of the trace's
// requests of that turn whose conversation has a next turn.
func continuation(reqs []chatRequest) [LineageClasses]float64 {
	last := map[int]int{}
	for _, r := range reqs {
		last[r.Conversation] = max(last[r.Conversation], r.Turn)
	}
	var n, more [LineageClasses]float64
	for _, r := range reqs {
		t := min(r.Turn, LineageClasses-1)
		n[t]++
		if r.Turn < last[r.Conversation] {
			more[t]++
		}
	}
	var q [LineageClasses]float64
	for t := range q {
		q[t] = 0.5
		if n[t] > 0 {
			q[t] = min(max(more[t]/n[t], 0.001), 0.999)
		}
	}
	return q
}

// TestEvictionBounds replays the reference trace with vLLM's LRU,
// EvictShared, EvictLineage, EvictLineage told the trace's per-turn
// continuation rates instead of learning them, and the two clairvoyant
// policies of futureEvictor, and logs their hit tokens: how far online policies are
// from what knowing the future would give. Belady's bound must be at least
// every other policy's, and knowing which conversations have ended must
// beat LRU.
func TestEvictionBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("replays the reference trace 18 times")
	}
	reqs := readChatTrace(t)
	known := continuation(reqs)
	t.Logf("per-turn continuation: %.2f", known[:7])
	for _, c := range []int{128, 512, 2048} {
		hits := map[string]int64{}
		for _, name := range []string{"lru", "shared", "lineage", "lineage-known-q", "dead-first", "belady"} {
			cfg := PoolConfig{NumPages: c + 1, PageSize: 16, PrefixCaching: true}
			switch name {
			case "shared", "lineage":
				ev, err := ParseEviction(name)
				require.NoError(t, err)
				cfg.Eviction = ev
			case "lineage-known-q":
				cfg.Eviction = EvictLineage
			case "dead-first", "belady":
				cfg.Eviction = EvictShared // replaced below
			}
			p, err := NewPool(cfg)
			require.NoError(t, err)
			switch name {
			case "dead-first", "belady":
				p.ev = newFutureEvictor(p, reqs, name == "belady")
			case "lineage-known-q":
				p.ev.(*lineageEvictor).known = &known
			}
			r := replayVLLM(t, p, reqs)
			require.NoError(t, p.checkInvariants())
			hits[name] = r.HitTokens
		}
		line := fmt.Sprintf("%d pages:", c)
		for _, name := range []string{"lru", "shared", "lineage", "lineage-known-q", "dead-first", "belady"} {
			line += fmt.Sprintf(" %s %d (%+.1f%%)", name, hits[name], 100*(float64(hits[name])/float64(hits["lru"])-1))
			assert.GreaterOrEqual(t, hits["belady"], hits[name], "%d pages: belady vs %s", c, name)
		}
		assert.GreaterOrEqual(t, hits["dead-first"], hits["lru"], "%d pages", c)
		t.Log(line)
	}
}
