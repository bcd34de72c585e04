package sim

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kvmesh/kvmesh/pagemanager"
)

// Sentinel errors; the returned errors wrap them with the offending values.
var (
	// ErrTrace reports a malformed trace (see LineError).
	ErrTrace = errors.New("sim: bad trace")
	// ErrInvalidConfig reports a Config or GenConfig outside its valid
	// range, or an unknown policy name.
	ErrInvalidConfig = errors.New("sim: invalid config")
)

// Policy is a replay's eviction policy.
type Policy uint8

const (
	// VLLM is vLLM's prefix cache: the pool's LRU free queue
	// (pagemanager.EvictLRU). A replay with it reproduces vLLM 0.16.0's
	// KV-cache manager exactly.
	VLLM Policy = iota
	// Shared keeps shared prefixes while they are hit more often than
	// private pages and takes keyless pages first
	// (pagemanager.EvictShared, documented there).
	Shared
	// Lineage evicts the pages of conversations least likely to come
	// back, learning per turn how often a conversation continues and how
	// long its next turn takes (pagemanager.EvictLineage, documented
	// there).
	Lineage
)

var policyNames = [...]string{VLLM: "vllm", Shared: "shared", Lineage: "lineage"}

// String returns the policy's name: "vllm", "shared" or "lineage".
func (p Policy) String() string {
	if int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy returns the policy named name. An unknown name is an error
// wrapping ErrInvalidConfig that lists the known ones.
func ParsePolicy(name string) (Policy, error) {
	for p, n := range policyNames {
		if n == name {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("%w: policy %q, want one of %s", ErrInvalidConfig, name, strings.Join(policyNames[:], ", "))
}

// Eviction returns the pool eviction policy that implements p.
func (p Policy) Eviction() pagemanager.Eviction {
	switch p {
	case Shared:
		return pagemanager.EvictShared
	case Lineage:
		return pagemanager.EvictLineage
	}
	return pagemanager.EvictLRU
}

// Config is one replay's setup.
type Config struct {
	// Capacity is the number of usable pages (vLLM's usable blocks; the
	// pool gets one more, its reserved page 0).
	Capacity int
	// PageSize is the number of tokens per page (vLLM's block size).
	PageSize int
	// Policy is the eviction policy.
	Policy Policy
}

// Validate checks that Capacity is in 1..math.MaxInt32-1, PageSize is
// positive and Policy is known.
func (c Config) Validate() error {
	if c.Capacity < 1 || c.Capacity > 1<<31-2 {
		return fmt.Errorf("%w: capacity %d pages, want 1..%d", ErrInvalidConfig, c.Capacity, 1<<31-2)
	}
	if c.PageSize < 1 {
		return fmt.Errorf("%w: page size %d, want a positive number of tokens", ErrInvalidConfig, c.PageSize)
	}
	if int(c.Policy) >= len(policyNames) {
		return fmt.Errorf("%w: policy %d, want 0..%d", ErrInvalidConfig, c.Policy, len(policyNames)-1)
	}
	return nil
}

// Result is what one replay measured.
type Result struct {
	// Config is the replay's setup.
	Config Config
	// Requests is the number of requests in the trace.
	Requests int
	// Skipped is the number of requests that could not fit in the pool.
	Skipped int
	// PromptTokens is the number of prompt tokens of the admitted
	// requests; a skipped request never reaches the lookup, so its
	// tokens count neither here nor in HitTokens (as in vLLM's prefix
	// cache statistics).
	PromptTokens int64
	// HitTokens is the number of those tokens served by the prefix cache.
	HitTokens int64
	// Evictions is the number of cached pages whose key was dropped to
	// reuse the page.
	Evictions int64
	// CachedAtEnd is the number of pages carrying a key after the last
	// request.
	CachedAtEnd int
	// PerRequestHitTokens has one entry per trace request, in trace order:
	// its hit tokens, 0 when skipped.
	PerRequestHitTokens []int
	// PerRequestEvictionsSoFar has one entry per trace request: the
	// running eviction count after it.
	PerRequestEvictionsSoFar []int64
	// Wall is the replay's wall time, pool creation included.
	Wall time.Duration
}

// HitRate returns HitTokens / PromptTokens, or 0 without prompt tokens.
func (r Result) HitRate() float64 {
	if r.PromptTokens == 0 {
		return 0
	}
	return float64(r.HitTokens) / float64(r.PromptTokens)
}

// Replay runs the trace through a fresh pagemanager.Pool of cfg.Capacity
// usable pages, one request at a time in trace order, under vLLM's
// engine model (see the package documentation): a request of P prompt and
// N output tokens is skipped when ceil((P+N-1)/PageSize) pages exceed the
// capacity; otherwise it is added with its last prompt token always
// recomputed (Request.Recompute 1), its output tokens but the last are
// appended one at a time, and it is freed.
//
// An invalid cfg is an error wrapping ErrInvalidConfig; a request with an
// empty prompt or output (ReadTrace never returns one) wraps ErrTrace.
// Skipped requests are counted, never errors.
func Replay(reqs []Request, cfg Config) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	for i, q := range reqs {
		if len(q.Prompt) == 0 || len(q.Output) == 0 {
			return Result{}, fmt.Errorf("%w: request %d (id %d) has %d prompt and %d output tokens, want at least 1 of each", ErrTrace, i, q.ID, len(q.Prompt), len(q.Output))
		}
	}
	start := time.Now()
	p, err := pagemanager.NewPool(pagemanager.PoolConfig{
		NumPages: cfg.Capacity + 1, PageSize: cfg.PageSize, PrefixCaching: true, Eviction: cfg.Policy.Eviction(),
	})
	if err != nil {
		return Result{}, fmt.Errorf("sim: %w", err)
	}
	r := Result{
		Config:                   cfg,
		Requests:                 len(reqs),
		PerRequestHitTokens:      make([]int, len(reqs)),
		PerRequestEvictionsSoFar: make([]int64, len(reqs)),
	}
	ps := cfg.PageSize
	one := make([]int32, 1)
	for i, q := range reqs {
		if n := len(q.Prompt) + len(q.Output) - 1; (n+ps-1)/ps > cfg.Capacity {
			r.Skipped++
			r.PerRequestEvictionsSoFar[i] = p.Stats().Evictions
			continue
		}
		id := pagemanager.SeqID(i)
		st, err := p.Add(id, pagemanager.Request{Tokens: q.Prompt, Recompute: 1})
		if err != nil {
			return Result{}, fmt.Errorf("sim: request %d (id %d): %w", i, q.ID, err)
		}
		for _, tok := range q.Output[:len(q.Output)-1] {
			one[0] = tok
			if _, err := p.Append(id, one); err != nil {
				return Result{}, fmt.Errorf("sim: request %d (id %d): %w", i, q.ID, err)
			}
		}
		if err := p.Free(id); err != nil {
			return Result{}, fmt.Errorf("sim: request %d (id %d): %w", i, q.ID, err)
		}
		r.PerRequestHitTokens[i] = st.HitTokens
		r.PerRequestEvictionsSoFar[i] = p.Stats().Evictions
	}
	s := p.Stats()
	r.PromptTokens, r.HitTokens, r.Evictions = s.PromptTokens, s.HitTokens, s.Evictions
	r.CachedAtEnd = p.NumCached()
	r.Wall = time.Since(start)
	return r, nil
}

// ReplayAll replays the trace at each capacity, in order, with the same
// page size and policy.
func ReplayAll(reqs []Request, capacities []int, pageSize int, policy Policy) ([]Result, error) {
	results := make([]Result, 0, len(capacities))
	for _, c := range capacities {
		r, err := Replay(reqs, Config{Capacity: c, PageSize: pageSize, Policy: policy})
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	return results, nil
}
