package pagemanager

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatRequest is one request of a multi-turn chat workload.
type chatRequest struct {
	ID           int     `json:"id"`
	Conversation int     `json:"conversation"`
	Turn         int     `json:"turn"`
	Prompt       []int32 `json:"prompt_token_ids"`
	Output       []int32 `json:"output_token_ids"`
}

// replayResult is what a replay measured.
type replayResult struct {
	Skipped        int
	PromptTokens   int64
	HitTokens      int64
	Evictions      int64
	Hits           []int   // hit tokens per request (0 when skipped)
	EvictionsSoFar []int64 // evictions after each request
	CachedAtEnd    int
}

// replayVLLM runs requests one at a time through p with the engine model
// of vLLM's KV-cache manager (shared/traces/README.md): a request whose
// P+N-1 tokens need more pages than the pool has is skipped; the prompt is
// added with its last token always recomputed; the output tokens but the
// last are fed one at a time; the request is then freed.
func replayVLLM(t testing.TB, p *Pool, reqs []chatRequest) replayResult {
	ps, usable := p.Config().PageSize, p.Config().NumPages-1
	var r replayResult
	for _, q := range reqs {
		n := len(q.Prompt) + len(q.Output) - 1
		if (n+ps-1)/ps > usable {
			r.Skipped++
			r.Hits = append(r.Hits, 0)
			r.EvictionsSoFar = append(r.EvictionsSoFar, p.Stats().Evictions)
			continue
		}
		id := SeqID(q.ID)
		st, err := p.Add(id, Request{Tokens: q.Prompt, Recompute: 1})
		require.NoError(t, err, "request %d", q.ID)
		for _, tok := range q.Output[:len(q.Output)-1] {
			_, err := p.Append(id, []int32{tok})
			require.NoError(t, err, "request %d", q.ID)
		}
		require.NoError(t, p.Free(id))
		r.Hits = append(r.Hits, st.HitTokens)
		r.EvictionsSoFar = append(r.EvictionsSoFar, p.Stats().Evictions)
	}
	s := p.Stats()
	r.PromptTokens, r.HitTokens, r.Evictions = s.PromptTokens, s.HitTokens, s.Evictions
	r.CachedAtEnd = p.NumCached()
	return r
}

// chatWorkload generates a seeded multi-turn chat workload shaped like
// shared/traces/chat-multiturn.jsonl: system prompts shared by
// conversations whose turn t prompt is the system prompt, every earlier
// user message and reply, and a new user message; conversations
// interleaved in time.
func chatWorkload(seed uint64, systems, conversations int) []chatRequest {
	rng := rand.New(rand.NewPCG(seed, 0x6b766d657368))
	toks := func(lo, hi int) []int32 { return randTokens(rng, lo+rng.IntN(hi-lo+1), 32000) }
	sys := make([][]int32, systems)
	for i := range sys {
		sys[i] = toks(200, 600)
	}
	type conv struct {
		history []int32
		turns   int
	}
	convs := make([]*conv, conversations)
	for i := range convs {
		convs[i] = &conv{history: sys[rng.IntN(systems)], turns: 2 + rng.IntN(5)}
	}
	var reqs []chatRequest
	active := make([]int, conversations)
	for i := range active {
		active[i] = i
	}
	turn := make([]int, conversations)
	for len(active) > 0 {
		j := rng.IntN(len(active))
		c := active[j]
		cv := convs[c]
		prompt := append(append([]int32(nil), cv.history...), toks(20, 200)...)
		out := toks(10, 150)
		reqs = append(reqs, chatRequest{ID: len(reqs), Conversation: c, Turn: turn[c], Prompt: prompt, Output: out})
		cv.history = append(prompt, out...)
		turn[c]++
		if turn[c] == cv.turns {
			active = append(active[:j], active[j+1:]...)
		}
	}
	return reqs
}

// unboundedHits computes, without a pool, the hits of a replay with
// unlimited pages: a request hits the longest run of its leading full
// prompt pages (at most (P-1)/ps of them) that were full pages of an
// earlier request's first P+N-1 tokens. Prefixes are kept in a trie of
// pages.
func unboundedHits(reqs []chatRequest, ps int) []int {
	type node map[string]node
	root := node{}
	hits := make([]int, len(reqs))
	for i, q := range reqs {
		n := root
		for b := 0; b < (len(q.Prompt)-1)/ps; b++ {
			if n = n[fmt.Sprint(q.Prompt[b*ps:(b+1)*ps])]; n == nil {
				break
			}
			hits[i] = (b + 1) * ps
		}
		all := append(append([]int32(nil), q.Prompt...), q.Output[:len(q.Output)-1]...)
		n = root
		for b := 0; (b+1)*ps <= len(all); b++ {
			k := fmt.Sprint(all[b*ps : (b+1)*ps])
			if n[k] == nil {
				n[k] = node{}
			}
			n = n[k]
		}
	}
	return hits
}

// TestChatSimulation replays a seeded synthetic chat workload through
// pools of several sizes and reports the prefix hit rate and evictions.
// With more pages than the workload ever fills, the hits must equal an
// independent computation; with fewer, hits can only drop and evictions
// rise as the pool shrinks.
func TestChatSimulation(t *testing.T) {
	reqs := chatWorkload(1, 8, 60)
	total := 0
	for _, q := range reqs {
		total += (len(q.Prompt) + len(q.Output) + 14) / 16
	}
	want := unboundedHits(reqs, 16)
	prevHits, prevEvictions := int64(-1), int64(-1)
	for _, blocks := range []int{total + 1, 2048, 512, 128} {
		p, err := NewPool(PoolConfig{NumPages: blocks + 1, PageSize: 16, PrefixCaching: true})
		require.NoError(t, err)
		r := replayVLLM(t, p, reqs)
		require.NoError(t, p.checkInvariants())
		t.Logf("%5d blocks: %d requests, %d skipped, hit rate %.4f (%d of %d prompt tokens), %d evictions",
			blocks, len(reqs), r.Skipped, float64(r.HitTokens)/float64(r.PromptTokens), r.HitTokens, r.PromptTokens, r.Evictions)
		if blocks > total {
			assert.Equal(t, want, r.Hits, "unbounded pool")
			assert.Zero(t, r.Evictions)
		} else {
			assert.LessOrEqual(t, r.HitTokens, prevHits, "%d blocks", blocks)
			assert.GreaterOrEqual(t, r.Evictions, prevEvictions, "%d blocks", blocks)
			assert.Positive(t, r.Evictions, "%d blocks", blocks)
		}
		prevHits, prevEvictions = r.HitTokens, r.Evictions
	}
}

// TestVLLMTrace replays testdata/traces/chat-multiturn.jsonl and checks
// that the pool, driven with vLLM's rules, reports exactly what vLLM's own
// KV-cache manager reported on it (chat-multiturn.vllm.json, see
// testdata/traces/PROVENANCE.md): hit tokens per request, running
// evictions, totals and the cached pages left.
func TestVLLMTrace(t *testing.T) {
	dir := filepath.Join("testdata", "traces")
	f, err := os.Open(filepath.Join(dir, "chat-multiturn.jsonl"))
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
	raw, err := os.ReadFile(filepath.Join(dir, "chat-multiturn.vllm.json"))
	require.NoError(t, err)
	var ref struct {
		Capacities map[string]struct {
			CapacityBlocks int   `json:"capacity_blocks"`
			Skipped        int   `json:"skipped_requests"`
			PromptTokens   int64 `json:"total_prompt_tokens"`
			HitTokens      int64 `json:"total_hit_tokens"`
			Evictions      int64 `json:"evictions"`
			CachedAtEnd    int   `json:"cached_blocks_at_end"`
			Hits           []int `json:"per_request_hit_tokens"`
			PerRequest     []struct {
				EvictionsSoFar int64 `json:"evictions_so_far"`
			} `json:"per_request"`
		} `json:"capacities"`
	}
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.NotEmpty(t, ref.Capacities)
	for name, want := range ref.Capacities {
		t.Run("blocks="+name, func(t *testing.T) {
			p, err := NewPool(PoolConfig{NumPages: want.CapacityBlocks + 1, PageSize: 16, PrefixCaching: true})
			require.NoError(t, err)
			r := replayVLLM(t, p, reqs)
			require.NoError(t, p.checkInvariants())
			assert.Equal(t, want.Hits, r.Hits)
			evs := make([]int64, len(want.PerRequest))
			for i, q := range want.PerRequest {
				evs[i] = q.EvictionsSoFar
			}
			assert.Equal(t, evs, r.EvictionsSoFar)
			assert.Equal(t, want.Skipped, r.Skipped)
			assert.Equal(t, want.PromptTokens, r.PromptTokens)
			assert.Equal(t, want.HitTokens, r.HitTokens)
			assert.Equal(t, want.Evictions, r.Evictions)
			assert.Equal(t, want.CachedAtEnd, r.CachedAtEnd)
			t.Logf("hit rate %.4f, %d evictions (vLLM: %.4f, %d)", float64(r.HitTokens)/float64(r.PromptTokens), r.Evictions,
				float64(want.HitTokens)/float64(want.PromptTokens), want.Evictions)
		})
	}
}
