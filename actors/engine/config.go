package engine

import (
	"errors"
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/pagemanager"
)

var (
	// ErrConfig reports a Config value outside its valid range.
	ErrConfig = errors.New("engine: invalid config")
	// ErrDoesNotFit reports a workload one of whose requests cannot fit
	// the page budget even alone; the message says what to change.
	ErrDoesNotFit = errors.New("engine: workload does not fit the page budget")
	// ErrVerify reports generated tokens that differ from the full
	// recompute's.
	ErrVerify = errors.New("engine: verification failed")
)

// Range is an inclusive range of integers, drawn uniformly.
type Range struct {
	Min int `json:"min"`
	Max int `json:"max"`
}

func (r Range) check(name string, lo int) error {
	if r.Min < lo || r.Max < r.Min {
		return fmt.Errorf("%w: %s is %d..%d, want %d <= min <= max", ErrConfig, name, r.Min, r.Max, lo)
	}
	return nil
}

// Workload describes the synthetic, seeded serving workload: chat
// conversations whose every turn is a request. A turn's prompt is its
// conversation's system prompt (one of a few, shared by many
// conversations), then every earlier user message and reply, then a new
// user message; so requests share prefixes both across conversations and
// within one.
type Workload struct {
	// Seed seeds every draw of the workload (math/rand/v2 PCG).
	Seed uint64 `json:"seed"`
	// Requests is the number of requests (turns) in all.
	Requests int `json:"requests"`
	// Turns is the largest number of turns of a conversation; each
	// conversation has 1..Turns, uniformly.
	Turns int `json:"turns"`
	// SystemPrompts is the number of distinct system prompts; each
	// conversation picks one uniformly.
	SystemPrompts int `json:"system_prompts"`
	// SystemLen, UserLen and OutputLen are the lengths in tokens of the
	// system prompts, of each user message and of each reply.
	SystemLen Range `json:"system_len"`
	UserLen   Range `json:"user_len"`
	OutputLen Range `json:"output_len"`
	// ArrivalRate is the mean number of new conversations per engine
	// step (a Poisson process): arrivals are spread over the run.
	ArrivalRate float64 `json:"arrival_rate"`
	// ThinkSteps is the pause, in steps, between a reply and the next turn
	// of its conversation.
	ThinkSteps Range `json:"think_steps"`
}

// Scheduler sizes the continuous-batching scheduler and its caches.
type Scheduler struct {
	// Slots is the number of sequences running at once: the batch rows of
	// the caches (decode slots, recurrent-state rows).
	Slots int `json:"slots"`
	// TokenBudget is the number of tokens one step computes at most:
	// decodes (one token each) first, then prefill chunks.
	TokenBudget int `json:"token_budget"`
	// PageSize is the number of tokens per page.
	PageSize int `json:"page_size"`
	// Pages is the number of usable pages of the pool (the reserved page 0
	// comes on top).
	Pages int `json:"pages"`
	// PrefixCaching lets requests reuse the cached pages (and, in a hybrid
	// model, the recurrent-state checkpoints) of earlier ones.
	PrefixCaching bool `json:"prefix_caching"`
	// Eviction is the pool's eviction policy: "lru" (vLLM's order, the
	// default), "shared" (keeps shared prefixes while they out-hit private
	// pages; pagemanager.EvictShared) or "lineage" (evicts the pages of
	// conversations that have probably ended; pagemanager.EvictLineage).
	Eviction pagemanager.Eviction `json:"eviction"`
}

// Config is everything a run needs. The JSON names are those of
// `kvmesh run --config`.
type Config struct {
	Model     reference.HybridConfig `json:"model"`
	Workload  Workload               `json:"workload"`
	Scheduler Scheduler              `json:"scheduler"`
	// Verify re-runs this many finished requests with no cache at all,
	// recomputing the whole sequence for every token, and requires the
	// same tokens; 0 skips the check.
	Verify int `json:"verify"`

	// Fault breaks the cache path on purpose, to show that verification
	// catches it: FaultNone (the default), FaultRecurrentReset or FaultKVZero.
	Fault Fault `json:"-"`
	// Progress, when set, is called after every step.
	Progress func(Progress) `json:"-"`
	// Snapshot, when set, is called once the last step has committed, once
	// per cache in the order of CacheIDs, with the cache's id and its final
	// committed version (MarshalVersion encodes it as a snapshot file). It
	// runs before the verification, so a run that fails verification has
	// called it too, and its time is not part of the report's timings. An
	// error it returns ends the run with that error, naming the cache.
	Snapshot func(id string, v actors.Version) error `json:"-"`
}

// CacheIDs returns the ids of the caches a run of c creates, in creation
// order: "kv" (the paged KV cache of the attention layers), then "mamba2"
// and "lightning" when the model has layers of that kind.
func (c Config) CacheIDs() []string {
	ids := []string{"kv"}
	if c.Model.Count(reference.LayerMamba2) > 0 {
		ids = append(ids, "mamba2")
	}
	if c.Model.Count(reference.LayerLightning) > 0 {
		ids = append(ids, "lightning")
	}
	return ids
}

// Fault is a deliberate defect of the cache path (for tests and demos of
// the verifier).
type Fault string

// The faults.
const (
	// FaultNone breaks nothing.
	FaultNone Fault = ""
	// FaultRecurrentReset serves the recurrent layers their version-0
	// states at every step, as if the cache lost every state write.
	FaultRecurrentReset Fault = "recurrent-reset"
	// FaultKVZero writes zeros instead of the decode tokens' keys and
	// values into the paged cache.
	FaultKVZero Fault = "kv-zero"
)

// Progress is the state of a run after a step.
type Progress struct {
	Step      int // steps so far
	Finished  int // requests finished
	Requests  int // requests in all
	Running   int // sequences running
	Waiting   int // requests arrived and waiting
	TokensOut int // tokens generated so far
	PagesUsed int // pages held by running sequences
	Pages     int // usable pages
}

// DefaultConfig returns the configuration of `kvmesh run` without flags:
// the default hybrid model serving 96 requests (conversations of up to 4
// turns over 4 system prompts) with 16 slots, a budget of 256 tokens per
// step and 128 pages of 16 tokens, prefix caching on, 6 requests verified.
// The pages are tight on purpose, so that the run preempts; it finishes in
// a few seconds on two cores.
func DefaultConfig() Config {
	return Config{
		Model: reference.DefaultHybridConfig(),
		Workload: Workload{Seed: 1, Requests: 96, Turns: 4, SystemPrompts: 4,
			SystemLen: Range{64, 192}, UserLen: Range{16, 64}, OutputLen: Range{16, 48},
			ArrivalRate: 0.3, ThinkSteps: Range{0, 12}},
		Scheduler: Scheduler{Slots: 16, TokenBudget: 256, PageSize: 16, Pages: 128, PrefixCaching: true},
		Verify:    6,
	}
}

// MaxSequence returns the longest sequence a request of w can reach, in
// tokens: the longest system prompt and Turns of the longest user message
// and reply.
func (w Workload) MaxSequence() int {
	return w.SystemLen.Max + w.Turns*(w.UserLen.Max+w.OutputLen.Max)
}

// Validate checks every value, naming the first one out of range (by its
// JSON name), and that a request fits the page budget alone (ErrDoesNotFit,
// with what to change).
func (c Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Model.Count(reference.LayerAttention) == 0 {
		return fmt.Errorf("%w: model layers %q have no attention layer: the engine schedules attention pages",
			ErrConfig, reference.FormatLayerPattern(c.Model.Layers))
	}
	w, s := c.Workload, c.Scheduler
	for _, f := range []struct {
		name   string
		v, min int
	}{{"requests", w.Requests, 1}, {"turns", w.Turns, 1}, {"system_prompts", w.SystemPrompts, 1},
		{"slots", s.Slots, 1}, {"token_budget", s.TokenBudget, 1}, {"page_size", s.PageSize, 1}, {"pages", s.Pages, 1},
		{"verify", c.Verify, 0}} {
		if f.v < f.min {
			return fmt.Errorf("%w: %s is %d, want at least %d", ErrConfig, f.name, f.v, f.min)
		}
	}
	for _, r := range []struct {
		name string
		r    Range
		lo   int
	}{{"system_len", w.SystemLen, 0}, {"user_len", w.UserLen, 1}, {"output_len", w.OutputLen, 1}, {"think_steps", w.ThinkSteps, 0}} {
		if err := r.r.check(r.name, r.lo); err != nil {
			return err
		}
	}
	if !(w.ArrivalRate > 0) || math.IsInf(w.ArrivalRate, 0) {
		return fmt.Errorf("%w: arrival_rate is %g, want a positive number of conversations per step", ErrConfig, w.ArrivalRate)
	}
	switch c.Fault {
	case FaultNone, FaultRecurrentReset, FaultKVZero:
	default:
		return fmt.Errorf("%w: fault %q (want %q or %q)", ErrConfig, c.Fault, FaultRecurrentReset, FaultKVZero)
	}
	const maxTokens = 1 << 20
	if n := w.MaxSequence(); n > maxTokens {
		return fmt.Errorf("%w: a request can reach %d tokens, more than %d", ErrConfig, n, maxTokens)
	}
	if s.Pages > math.MaxInt32-1 {
		return fmt.Errorf("%w: pages is %d, want at most %d", ErrConfig, s.Pages, math.MaxInt32-1)
	}
	n := w.MaxSequence()
	need := (n + s.PageSize - 1) / s.PageSize
	if need > s.Pages {
		return fmt.Errorf("%w: a request can reach %d tokens (system_len max %d + turns %d × (user_len max %d + output_len max %d)), "+
			"which is %d pages of %d tokens, but the pool has %d: raise pages (--pages) to at least %d, "+
			"or lower turns, system_len, user_len or output_len (--turns, --system-max, --prompt-max, --output-max)",
			ErrDoesNotFit, n, w.SystemLen.Max, w.Turns, w.UserLen.Max, w.OutputLen.Max, need, s.PageSize, s.Pages, need)
	}
	return nil
}
