package sim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var traceDir = filepath.Join("..", "testdata", "traces")

// referenceTrace reads chat-multiturn.jsonl once for all tests.
var referenceTrace = sync.OnceValues(func() ([]Request, error) {
	return ReadTraceFile(filepath.Join(traceDir, "chat-multiturn.jsonl"))
})

func loadReference(t testing.TB) []Request {
	t.Helper()
	reqs, err := referenceTrace()
	require.NoError(t, err)
	return reqs
}

// vllmResults is the part of chat-multiturn.vllm.json the replay must
// reproduce.
type vllmResults struct {
	Capacities map[string]struct {
		CapacityBlocks int     `json:"capacity_blocks"`
		Skipped        int     `json:"skipped_requests"`
		PromptTokens   int64   `json:"total_prompt_tokens"`
		HitTokens      int64   `json:"total_hit_tokens"`
		HitRate        float64 `json:"hit_rate"`
		Evictions      int64   `json:"evictions"`
		CachedAtEnd    int     `json:"cached_blocks_at_end"`
		Hits           []int   `json:"per_request_hit_tokens"`
		PerRequest     []struct {
			ID             int   `json:"id"`
			Skipped        bool  `json:"skipped"`
			HitTokens      int   `json:"hit_tokens"`
			EvictionsSoFar int64 `json:"evictions_so_far"`
		} `json:"per_request"`
	} `json:"capacities"`
}

// TestReplayMatchesVLLM replays the reference trace with the VLLM policy
// and checks, request by request, that it reports what vLLM 0.16.0's own
// KV-cache manager reported (chat-multiturn.vllm.json): hit tokens,
// running evictions, skips, totals and the pages cached at the end.
func TestReplayMatchesVLLM(t *testing.T) {
	reqs := loadReference(t)
	raw, err := os.ReadFile(filepath.Join(traceDir, "chat-multiturn.vllm.json"))
	require.NoError(t, err)
	var ref vllmResults
	require.NoError(t, json.Unmarshal(raw, &ref))
	require.Len(t, ref.Capacities, 3)
	for name, want := range ref.Capacities {
		t.Run("blocks="+name, func(t *testing.T) {
			r, err := Replay(reqs, Config{Capacity: want.CapacityBlocks, PageSize: 16, Policy: VLLM})
			require.NoError(t, err)
			require.Len(t, want.PerRequest, len(reqs))
			for i, q := range want.PerRequest {
				require.Equal(t, reqs[i].ID, q.ID)
				require.Equal(t, q.HitTokens, r.PerRequestHitTokens[i], "request %d: hit tokens", i)
				require.Equal(t, q.EvictionsSoFar, r.PerRequestEvictionsSoFar[i], "request %d: evictions so far", i)
			}
			assert.Equal(t, want.Hits, r.PerRequestHitTokens)
			assert.Equal(t, want.Skipped, r.Skipped)
			assert.Equal(t, want.PromptTokens, r.PromptTokens)
			assert.Equal(t, want.HitTokens, r.HitTokens)
			assert.InDelta(t, want.HitRate, r.HitRate(), 1e-15)
			assert.Equal(t, want.Evictions, r.Evictions)
			assert.Equal(t, want.CachedAtEnd, r.CachedAtEnd)
			assert.Equal(t, len(reqs), r.Requests)

			// The JSON report carries the same numbers under vLLM's names.
			entry := ReportOf([]Result{r}).Capacities[name]
			assert.Equal(t, want.HitTokens, entry.TotalHitTokens)
			assert.Equal(t, want.Evictions, entry.Evictions)
			assert.Equal(t, want.Hits, entry.PerRequestHitTokens)
		})
	}
}

// unboundedHits computes, without a pool, the hits of a replay with
// unlimited pages: a request hits the longest run of its leading full
// prompt pages, at most (P-1)/ps of them, that were full pages of an
// earlier admitted request's first P+N-1 tokens. Pages are nodes of a
// trie keyed by their tokens.
func unboundedHits(reqs []Request, ps int) []int {
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
		all := append(slices.Clone(q.Prompt), q.Output[:len(q.Output)-1]...)
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

// TestReplayUnbounded checks both policies against an independent
// computation on generated traces when the pool never has to evict.
func TestReplayUnbounded(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		cfg := DefaultGenConfig()
		cfg.Seed, cfg.Conversations = seed, 40
		reqs, err := Generate(cfg)
		require.NoError(t, err)
		pages := 0
		for _, q := range reqs {
			pages += (len(q.Prompt) + len(q.Output) + 14) / 16
		}
		want := unboundedHits(reqs, 16)
		for _, pol := range []Policy{VLLM, Shared, Lineage} {
			r, err := Replay(reqs, Config{Capacity: pages, PageSize: 16, Policy: pol})
			require.NoError(t, err)
			assert.Equal(t, want, r.PerRequestHitTokens, "seed %d, %s", seed, pol)
			assert.Zero(t, r.Evictions)
			assert.Positive(t, r.HitTokens)
		}
	}
}

// TestReplaySkips works a tiny trace by hand: pages of 4 tokens, 2 usable.
// A (5 prompt, 4 output tokens) caches 8 tokens, pages 1 and 2, freed
// page 2 first. B needs ceil((8+2-1)/4) = 3 pages: skipped, nothing
// changes. C repeats A's prompt: it may hit floor((5-1)/4) = 1 page (page
// 1, unlinked from the free queue) and takes page 2 for the rest,
// evicting A's second page.
func TestReplaySkips(t *testing.T) {
	reqs := []Request{
		{ID: 0, Prompt: []int32{1, 2, 3, 4, 5}, Output: []int32{6, 7, 8, 9}},
		{ID: 1, Prompt: []int32{1, 2, 3, 4, 5, 6, 7, 8}, Output: []int32{0, 0}},
		{ID: 2, Prompt: []int32{1, 2, 3, 4, 5}, Output: []int32{7}},
	}
	for _, pol := range []Policy{VLLM, Shared, Lineage} {
		r, err := Replay(reqs, Config{Capacity: 2, PageSize: 4, Policy: pol})
		require.NoError(t, err)
		assert.Equal(t, []int{0, 0, 4}, r.PerRequestHitTokens, "%s", pol)
		assert.Equal(t, []int64{0, 0, 1}, r.PerRequestEvictionsSoFar, "%s", pol)
		assert.Equal(t, 1, r.Skipped)
		assert.Equal(t, int64(10), r.PromptTokens, "a skipped prompt is not counted")
		assert.Equal(t, int64(4), r.HitTokens)
		assert.Equal(t, 0.4, r.HitRate())
		assert.Equal(t, 1, r.CachedAtEnd)
	}
	// Every request fits in 3 pages: B is admitted and hits A's 2 pages.
	r, err := Replay(reqs, Config{Capacity: 3, PageSize: 4})
	require.NoError(t, err)
	assert.Equal(t, []int{0, 4, 4}, r.PerRequestHitTokens)
	assert.Zero(t, r.Skipped)
}

func TestReplayErrors(t *testing.T) {
	reqs := []Request{{Prompt: []int32{1}, Output: []int32{2}}}
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Capacity: 0, PageSize: 16}, "capacity 0 pages"},
		{Config{Capacity: -3, PageSize: 16}, "capacity -3 pages"},
		{Config{Capacity: 1 << 31, PageSize: 16}, "capacity 2147483648 pages"},
		{Config{Capacity: 8, PageSize: 0}, "page size 0"},
		{Config{Capacity: 8, PageSize: 16, Policy: 7}, "policy 7"},
	} {
		_, err := Replay(reqs, tt.cfg)
		assert.ErrorIs(t, err, ErrInvalidConfig, "%+v", tt.cfg)
		assert.ErrorContains(t, err, tt.want)
	}
	_, err := Replay([]Request{{ID: 5, Prompt: []int32{1}}}, Config{Capacity: 8, PageSize: 16})
	assert.ErrorIs(t, err, ErrTrace)
	assert.ErrorContains(t, err, "request 0 (id 5) has 1 prompt and 0 output tokens")

	results, err := ReplayAll(reqs, []int{4, 1}, 16, Shared)
	require.NoError(t, err)
	require.Len(t, results, 2)
	assert.Equal(t, Config{Capacity: 1, PageSize: 16, Policy: Shared}, results[1].Config)
	_, err = ReplayAll(reqs, []int{4, 0}, 16, Shared)
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{VLLM, Shared, Lineage} {
		got, err := ParsePolicy(p.String())
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	assert.Equal(t, "vllm", VLLM.String())
	assert.Equal(t, "shared", Shared.String())
	assert.Equal(t, "lineage", Lineage.String())
	assert.Equal(t, "Policy(4)", Policy(4).String())
	_, err := ParsePolicy("lru")
	assert.ErrorIs(t, err, ErrInvalidConfig)
	assert.ErrorContains(t, err, `policy "lru", want one of vllm, shared, lineage`)
}

// TestSharedBeatsVLLM checks the Shared policy's goals: on the reference
// trace at least 10% more hit tokens than vLLM at 128 blocks, and never
// fewer at any capacity there or on traces generated in the reference
// shape with other seeds. It logs the gains (the numbers of the issue).
func TestSharedBeatsVLLM(t *testing.T) {
	traces := map[string][]Request{"reference": loadReference(t)}
	for seed := uint64(1); seed <= 4; seed++ {
		cfg := DefaultGenConfig()
		cfg.Seed = seed
		reqs, err := Generate(cfg)
		require.NoError(t, err)
		traces["generated seed "+strconv.FormatUint(seed, 10)] = reqs
	}
	for name, reqs := range traces {
		line := name + ":"
		for _, c := range []int{64, 128, 256, 512, 1024, 2048, 4096} {
			v, err := Replay(reqs, Config{Capacity: c, PageSize: 16, Policy: VLLM})
			require.NoError(t, err)
			s, err := Replay(reqs, Config{Capacity: c, PageSize: 16, Policy: Shared})
			require.NoError(t, err)
			assert.GreaterOrEqual(t, s.HitTokens, v.HitTokens, "%s at %d pages", name, c)
			if name == "reference" && c == 128 {
				assert.GreaterOrEqual(t, float64(s.HitTokens), 1.1*float64(v.HitTokens), "%s at %d pages", name, c)
			}
			line += fmt.Sprintf(" %d: %d vs %d (%+.1f%%)", c, s.HitTokens, v.HitTokens, 100*(float64(s.HitTokens)/float64(v.HitTokens)-1))
		}
		t.Log(line)
	}
}

// TestLineageBeatsVLLM checks the Lineage policy against vLLM on the
// reference trace at 13 capacities from 64 to 4096 pages (never fewer hit
// tokens; at least 10% more at 128 pages, at least 5% more at 512) and on
// traces generated in the reference shape with seeds 1-4 (at least 10%
// more at 128 and 5% more at 512; elsewhere at most 0.1% fewer: seed 4
// at 64 pages hits one page less than vLLM). It logs the gains.
func TestLineageBeatsVLLM(t *testing.T) {
	type trace struct {
		name string
		reqs []Request
		caps []int
	}
	traces := []trace{{"reference", loadReference(t), []int{64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096}}}
	for seed := uint64(1); seed <= 4; seed++ {
		cfg := DefaultGenConfig()
		cfg.Seed = seed
		reqs, err := Generate(cfg)
		require.NoError(t, err)
		traces = append(traces, trace{"generated seed " + strconv.FormatUint(seed, 10), reqs, []int{64, 128, 256, 512, 1024, 2048, 4096}})
	}
	for _, tr := range traces {
		line := tr.name + ":"
		for _, c := range tr.caps {
			v, err := Replay(tr.reqs, Config{Capacity: c, PageSize: 16, Policy: VLLM})
			require.NoError(t, err)
			l, err := Replay(tr.reqs, Config{Capacity: c, PageSize: 16, Policy: Lineage})
			require.NoError(t, err)
			gain := float64(l.HitTokens)/float64(v.HitTokens) - 1
			switch {
			case c == 128:
				assert.GreaterOrEqual(t, gain, 0.10, "%s at %d pages: %d vs %d", tr.name, c, l.HitTokens, v.HitTokens)
			case c == 512:
				assert.GreaterOrEqual(t, gain, 0.05, "%s at %d pages: %d vs %d", tr.name, c, l.HitTokens, v.HitTokens)
			case tr.name == "reference":
				assert.GreaterOrEqual(t, l.HitTokens, v.HitTokens, "%s at %d pages", tr.name, c)
			default:
				assert.GreaterOrEqual(t, gain, -0.001, "%s at %d pages: %d vs %d", tr.name, c, l.HitTokens, v.HitTokens)
			}
			line += fmt.Sprintf(" %d: %d vs %d (%+.1f%%)", c, l.HitTokens, v.HitTokens, 100*gain)
		}
		t.Log(line)
	}
}
