package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// smallConfig is a run of a few requests on a tiny model: fast under -race.
func smallConfig() Config {
	cfg := DefaultConfig()
	cfg.Model.Vocab, cfg.Model.Hidden = 64, 16
	cfg.Workload = Workload{Seed: 3, Requests: 14, Turns: 3, SystemPrompts: 2, SystemLen: Range{8, 40},
		UserLen: Range{2, 12}, OutputLen: Range{3, 10}, ArrivalRate: 0.6, ThinkSteps: Range{0, 3}}
	cfg.Scheduler = Scheduler{Slots: 4, TokenBudget: 24, PageSize: 4, Pages: 64, PrefixCaching: true}
	cfg.Verify = 3
	return cfg
}

// deterministic strips a report's timings: what remains is a function of
// the config.
func deterministic(r Report) Report {
	r.ElapsedSeconds, r.TokensPerSecond, r.OutputTokensPerSecond = 0, 0, 0
	r.StepP50US, r.StepP99US, r.StepMaxUS, r.ComputeP50US = 0, 0, 0, 0
	return r
}

// outputs returns every request's generated tokens by conversation and
// turn (request ids of later turns follow the order turns finish in).
func outputs(e *engine) map[[2]int][]int32 {
	out := map[[2]int][]int32{}
	for _, r := range e.requests {
		out[[2]int{r.conv.id, r.turn}] = r.tokens[len(r.prompt):]
	}
	return out
}

func TestRunIsDeterministicAndVerified(t *testing.T) {
	cfg := smallConfig()
	e1, a, err := run(context.Background(), cfg)
	require.NoError(t, err)
	e2, b, err := run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Equal(t, deterministic(a), deterministic(b))
	assert.Equal(t, outputs(e1), outputs(e2))

	assert.Equal(t, 14, a.Requests)
	assert.True(t, a.Verified)
	require.NotNil(t, a.Verify)
	assert.Len(t, a.Verify.Requests, 3)
	assert.Equal(t, cfg.Scheduler.Pages, a.PagesFreeAtEnd, "every page is free again")
	assert.Greater(t, a.PrefixHitRate, 0.0, "turns and system prompts share prefixes")
	assert.Greater(t, a.Checkpoints, 0, "a hybrid model keeps recurrent checkpoints at page boundaries")
	out, in := 0, 0
	for _, r := range e1.requests {
		assert.Len(t, r.tokens, len(r.prompt)+r.maxOut, "request %d generated all its tokens", r.id)
		out += r.maxOut
		in += len(r.prompt)
	}
	assert.Equal(t, out, a.TokensOut)
	assert.Equal(t, in, a.TokensIn)
	assert.Equal(t, a.TokensComputed, a.TokensIn-a.HitTokens+a.TokensOut-a.Requests,
		"without preemption every prompt token but the hits is computed once, and every output token but the last is fed back")
	assert.LessOrEqual(t, a.PeakPages, cfg.Scheduler.Pages)
	assert.Len(t, a.PageUtilization, 10)
	hitVerified := false
	for _, id := range a.Verify.Requests {
		hitVerified = hitVerified || e1.requests[id].hitTokens > 0
	}
	assert.True(t, hitVerified, "a request resumed from the prefix cache (pages and recurrent checkpoint) is verified")

	cfg.Workload.Seed++
	_, c, err := run(context.Background(), cfg)
	require.NoError(t, err)
	assert.NotEqual(t, deterministic(a).TokensIn, deterministic(c).TokensIn, "another seed, another workload")
}

// The tokens a request generates depend on its prompt only: not on the
// batch it ran in, the pages it got, prefix hits, preemptions or the model
// layers' caches being shared by other sequences.
func TestOutputsIndependentOfScheduling(t *testing.T) {
	base := smallConfig()
	base.Verify = 0
	e0, r0, err := run(context.Background(), base)
	require.NoError(t, err)
	want := outputs(e0)
	require.Zero(t, r0.Preemptions)
	for name, edit := range map[string]func(*Config){
		"no prefix caching": func(c *Config) { c.Scheduler.PrefixCaching = false },
		"one slot":          func(c *Config) { c.Scheduler.Slots = 1 },
		"budget of 1 token": func(c *Config) { c.Scheduler.TokenBudget = 1 },
		"tight pages":       func(c *Config) { c.Scheduler.Pages = 28 },
		"page size 1":       func(c *Config) { c.Scheduler.PageSize, c.Scheduler.Pages = 1, 200 },
		"shared eviction":   func(c *Config) { c.Scheduler.Eviction, c.Scheduler.Pages = pagemanager.EvictShared, 28 },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := base
			edit(&cfg)
			e, r, err := run(context.Background(), cfg)
			require.NoError(t, err)
			assert.Equal(t, want, outputs(e))
			assert.Equal(t, cfg.Scheduler.Pages, r.PagesFreeAtEnd)
			if !cfg.Scheduler.PrefixCaching {
				assert.Zero(t, r.HitTokens)
				assert.Zero(t, r.Checkpoints)
			}
		})
	}
}

// With pages for little more than one request at a time, sequences are
// preempted, recomputed, and still generate the full recompute's tokens;
// every page comes back.
func TestPreemptionByRecompute(t *testing.T) {
	cfg := smallConfig()
	cfg.Scheduler.Pages = 28 // a request can need 27
	cfg.Verify = 4
	e, r, err := run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Positive(t, r.Preemptions)
	assert.Equal(t, r.Preemptions, r.Admissions-r.Requests, "a preempted request is admitted again")
	assert.True(t, r.Verified)
	preempted := 0
	for _, q := range e.requests {
		if q.preempted > 0 {
			preempted++
		}
	}
	assert.Positive(t, preempted)
	assert.Contains(t, r.Verify.Requests, func() int {
		for _, q := range e.requests {
			if q.preempted > 0 {
				return q.id
			}
		}
		return -1
	}(), "verification covers a preempted request")
	assert.Equal(t, 28, r.PeakPages)
	assert.Equal(t, 28, r.PagesFreeAtEnd)
	assert.Empty(t, e.running)
}

// A broken cache path (recurrent states lost, or decode keys and values
// written as zeros) makes verification fail.
func TestVerifyCatchesABrokenCachePath(t *testing.T) {
	for _, f := range []Fault{FaultRecurrentReset, FaultKVZero} {
		t.Run(string(f), func(t *testing.T) {
			cfg := smallConfig()
			cfg.Fault = f
			cfg.Verify = 6
			rep, err := Run(context.Background(), cfg)
			require.ErrorIs(t, err, ErrVerify)
			assert.False(t, rep.Verified)
			require.NotNil(t, rep.Verify)
			assert.NotEmpty(t, rep.Verify.Mismatches)
			assert.Contains(t, err.Error(), "the full recompute gives")
		})
	}
}

func TestAttentionOnlyModel(t *testing.T) {
	cfg := smallConfig()
	cfg.Model.Layers = []reference.LayerKind{reference.LayerAttention, reference.LayerAttention}
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	assert.True(t, rep.Verified)
	assert.Zero(t, rep.Checkpoints)
	assert.InDelta(t, rep.AttentionHitRate, rep.PrefixHitRate, 0, "no recurrent state to restore: every attention hit is served")
}

func TestProgress(t *testing.T) {
	cfg := smallConfig()
	cfg.Verify = 0
	var seen []Progress
	cfg.Progress = func(p Progress) { seen = append(seen, p) }
	rep, err := Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Len(t, seen, rep.Steps)
	for i, p := range seen {
		assert.Equal(t, i+1, p.Step)
		assert.LessOrEqual(t, p.PagesUsed, p.Pages)
		if i > 0 {
			assert.GreaterOrEqual(t, p.Finished, seen[i-1].Finished)
		}
	}
	assert.Equal(t, cfg.Workload.Requests, seen[len(seen)-1].Finished)
	assert.Equal(t, rep.TokensOut, seen[len(seen)-1].TokensOut)
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, smallConfig())
	assert.ErrorIs(t, err, context.Canceled)
}

func TestValidate(t *testing.T) {
	require.NoError(t, DefaultConfig().Validate())
	for _, tc := range []struct {
		edit func(*Config)
		err  error
		msg  string
	}{
		{func(c *Config) { c.Workload.Requests = 0 }, ErrConfig, "requests is 0"},
		{func(c *Config) { c.Workload.Turns = 0 }, ErrConfig, "turns is 0"},
		{func(c *Config) { c.Scheduler.Slots = -1 }, ErrConfig, "slots is -1"},
		{func(c *Config) { c.Scheduler.TokenBudget = 0 }, ErrConfig, "token_budget is 0"},
		{func(c *Config) { c.Scheduler.PageSize = 0 }, ErrConfig, "page_size is 0"},
		{func(c *Config) { c.Verify = -1 }, ErrConfig, "verify is -1"},
		{func(c *Config) { c.Workload.UserLen = Range{5, 4} }, ErrConfig, "user_len is 5..4"},
		{func(c *Config) { c.Workload.OutputLen.Min = 0 }, ErrConfig, "output_len is 0.."},
		{func(c *Config) { c.Workload.ArrivalRate = 0 }, ErrConfig, "arrival_rate is 0"},
		{func(c *Config) { c.Model.Vocab = 0 }, ErrConfig, "vocab is 0"},
		{func(c *Config) { c.Model.Layers = []reference.LayerKind{reference.LayerMamba2} }, ErrConfig, "no attention layer"},
		{func(c *Config) { c.Fault = "bitflip" }, ErrConfig, `fault "bitflip"`},
		{func(c *Config) { c.Scheduler.Pages = 10 }, ErrDoesNotFit, "raise pages (--pages) to at least 40"},
	} {
		cfg := DefaultConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		require.ErrorIs(t, err, tc.err, tc.msg)
		assert.Contains(t, err.Error(), tc.msg)
		_, err = Run(context.Background(), cfg)
		assert.ErrorIs(t, err, tc.err)
	}
}

func TestPlanIsSeeded(t *testing.T) {
	w := smallConfig().Workload
	a, b := plan(w, 64), plan(w, 64)
	assert.Equal(t, a, b)
	turns := 0
	for i, c := range a {
		turns += len(c.turns)
		assert.LessOrEqual(t, len(c.turns), w.Turns)
		if i > 0 {
			assert.GreaterOrEqual(t, c.arrival, a[i-1].arrival)
		}
		for _, tn := range c.turns {
			assert.GreaterOrEqual(t, len(tn.user), w.UserLen.Min)
			assert.LessOrEqual(t, len(tn.user), w.UserLen.Max)
			assert.GreaterOrEqual(t, tn.output, w.OutputLen.Min)
			assert.LessOrEqual(t, tn.output, w.OutputLen.Max)
		}
	}
	assert.Equal(t, w.Requests, turns)
	w.Seed++
	assert.NotEqual(t, a, plan(w, 64))
}

// Requests that share a long system prompt and arrive together: the later
// ones wait while the first computes the shared pages, then take them from
// the prefix cache instead of computing them again.
func TestRequestsWaitForPagesInFlight(t *testing.T) {
	cfg := smallConfig()
	cfg.Workload = Workload{Seed: 5, Requests: 4, Turns: 1, SystemPrompts: 1, SystemLen: Range{40, 40},
		UserLen: Range{3, 3}, OutputLen: Range{2, 2}, ArrivalRate: 1000, ThinkSteps: Range{0, 0}}
	cfg.Scheduler.TokenBudget = 12
	e, r, err := run(context.Background(), cfg)
	require.NoError(t, err)
	assert.Positive(t, r.Deferrals)
	for _, q := range e.requests[1:] {
		assert.Equal(t, 40, q.hitTokens, "request %d takes the 10 full pages of the system prompt from the cache", q.id)
	}
	assert.Zero(t, e.requests[0].hitTokens)
	assert.True(t, r.Verified)
}

// The end-of-run check counts the pages the pool can still hand out, so a
// sequence left holding pages shows as missing pages.
func TestFreePagesAtEndSeesHeldPages(t *testing.T) {
	cfg := smallConfig()
	s := cfg.Scheduler
	rt, err := actors.NewRuntime()
	require.NoError(t, err)
	defer rt.Close()
	e, err := newEngine(cfg, Embedded(rt))
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, e.start(ctx))
	defer e.unsubscribe()
	free, err := e.freePagesAtEnd(ctx)
	require.NoError(t, err)
	assert.Equal(t, s.Pages, free)
	_, _, err = e.kv.AddSequence(ctx, 1000, pagemanager.Request{Tokens: make([]int32, 3*s.PageSize)})
	require.NoError(t, err)
	free, err = e.freePagesAtEnd(ctx)
	require.NoError(t, err)
	assert.Equal(t, s.Pages-3, free, "a leaked sequence's 3 pages are missing")
}
