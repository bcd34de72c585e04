package engine

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/kvmesh/kvmesh/layers/reference"
)

// Report is what a run measured. Every field but the timings (elapsed,
// tokens per second, step and compute latencies) is a function of the
// Config alone: the same config gives the same report.
type Report struct {
	Model         string `json:"model"`
	Requests      int    `json:"requests"`
	Conversations int    `json:"conversations"`
	Steps         int    `json:"steps"`
	Slots         int    `json:"slots"`
	PeakRunning   int    `json:"peak_running"`

	// TokensIn is the prompt tokens of all requests, TokensOut the tokens
	// they generated, TokensComputed the tokens the model ran through the
	// caches (prompts minus prefix hits, plus recomputation after
	// preemption, plus decodes).
	TokensIn       int `json:"tokens_in"`
	TokensOut      int `json:"tokens_out"`
	TokensComputed int `json:"tokens_computed"`

	ElapsedSeconds float64 `json:"elapsed_seconds"`
	// TokensPerSecond is (TokensIn+TokensOut) per second of serving;
	// OutputTokensPerSecond counts generated tokens only.
	TokensPerSecond       float64 `json:"tokens_per_second"`
	OutputTokensPerSecond float64 `json:"output_tokens_per_second"`
	// StepP50US and StepP99US are percentiles of the time one step spends
	// in the runtime (page-manager calls, transactions, layer writes,
	// commits), in microseconds; ComputeP50US is the model's own math.
	StepP50US    float64 `json:"step_p50_us"`
	StepP99US    float64 `json:"step_p99_us"`
	StepMaxUS    float64 `json:"step_max_us"`
	ComputeP50US float64 `json:"compute_p50_us"`

	Pages     int `json:"pages"`
	PageSize  int `json:"page_size"`
	PeakPages int `json:"peak_pages"`
	// PageUtilization is the mean fraction of pages held by running
	// sequences over each tenth of the run's steps.
	PageUtilization     []float64 `json:"page_utilization"`
	MeanPageUtilization float64   `json:"mean_page_utilization"`
	// PagesFreeAtEnd is the number of pages the pool could hand out after
	// the run: Pages unless pages leaked.
	PagesFreeAtEnd int `json:"pages_free_at_end"`

	Preemptions int `json:"preemptions"`
	Admissions  int `json:"admissions"`
	// PrefixHitRate is the prompt tokens served from the prefix cache over
	// the prompt tokens of every admission (re-admissions after preemption
	// included). AttentionHitRate is what the attention pages alone would
	// have served: in a hybrid model a hit also needs the recurrent
	// checkpoint at its boundary.
	PrefixHitRate    float64 `json:"prefix_hit_rate"`
	AttentionHitRate float64 `json:"attention_hit_rate"`
	HitTokens        int     `json:"hit_tokens"`
	// Evictions counts cached pages whose key was dropped to reuse them.
	Evictions int `json:"evictions"`
	// Deferrals counts admissions postponed because another sequence was
	// computing the pages the request would hit next.
	Deferrals int `json:"deferrals"`
	// Checkpoints is the number of recurrent-state checkpoints held at the
	// end (one per cached page boundary of a hybrid model).
	Checkpoints int `json:"checkpoints"`

	// Verified reports that the verification ran and passed.
	Verified bool          `json:"verified"`
	Verify   *Verification `json:"verify,omitempty"`
}

func (e *engine) report(elapsed time.Duration, free int) Report {
	s, st := e.cfg.Scheduler, e.st
	r := Report{Model: reference.FormatLayerPattern(e.cfg.Model.Layers), Requests: len(e.requests),
		Steps: st.steps, Slots: s.Slots, PeakRunning: st.maxRunning, TokensOut: st.tokensOut, TokensComputed: st.computedTokens,
		ElapsedSeconds: elapsed.Seconds(), Pages: s.Pages, PageSize: s.PageSize, PeakPages: st.peakPages, PagesFreeAtEnd: free,
		Preemptions: st.preemptions, Admissions: st.admissions, HitTokens: st.hitTokens, Evictions: st.evictions,
		Deferrals: st.deferrals}
	convs := map[*conversation]bool{}
	for _, q := range e.requests {
		r.TokensIn += len(q.prompt)
		convs[q.conv] = true
	}
	r.Conversations = len(convs)
	if secs := elapsed.Seconds(); secs > 0 {
		r.TokensPerSecond = float64(r.TokensIn+r.TokensOut) / secs
		r.OutputTokensPerSecond = float64(r.TokensOut) / secs
	}
	if st.admittedTokens > 0 {
		r.PrefixHitRate = float64(st.hitTokens) / float64(st.admittedTokens)
		r.AttentionHitRate = float64(st.attnHitTokens) / float64(st.admittedTokens)
	}
	r.StepP50US, r.StepP99US, r.StepMaxUS = micros(st.runtime, 0.50), micros(st.runtime, 0.99), micros(st.runtime, 1)
	r.ComputeP50US = micros(st.compute, 0.50)
	if n := len(st.utilization); n > 0 {
		var sum float64
		for _, u := range st.utilization {
			sum += u
		}
		r.MeanPageUtilization = sum / float64(n)
		parts := min(10, n)
		for p := range parts {
			seg := st.utilization[p*n/parts : (p+1)*n/parts]
			var s float64
			for _, u := range seg {
				s += u
			}
			r.PageUtilization = append(r.PageUtilization, s/float64(len(seg)))
		}
	}
	return r
}

// micros returns the q-quantile of ds (nearest rank) in microseconds.
func micros(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	i = min(max(i, 0), len(s)-1)
	return float64(s[i].Nanoseconds()) / 1e3
}

// WriteText prints the report for people.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	pct := func(x float64) string { return fmt.Sprintf("%.0f%%", 100*x) }
	fmt.Fprintf(&b, "kvmesh run: %d requests (%d conversations), model %s, %d slots, %d pages of %d tokens\n",
		r.Requests, r.Conversations, r.Model, r.Slots, r.Pages, r.PageSize)
	fmt.Fprintf(&b, "  tokens        in %d, out %d, computed %d: %.0f tokens/s (%.0f out/s)\n",
		r.TokensIn, r.TokensOut, r.TokensComputed, r.TokensPerSecond, r.OutputTokensPerSecond)
	fmt.Fprintf(&b, "  steps         %d in %.2f s; runtime per step p50 %.0f µs, p99 %.0f µs (model math p50 %.0f µs)\n",
		r.Steps, r.ElapsedSeconds, r.StepP50US, r.StepP99US, r.ComputeP50US)
	var util []string
	for _, u := range r.PageUtilization {
		util = append(util, pct(u))
	}
	fmt.Fprintf(&b, "  pages         peak %d of %d (%s), utilization over time %s (mean %s), %d of %d free at the end\n",
		r.PeakPages, r.Pages, pct(float64(r.PeakPages)/float64(max(r.Pages, 1))), strings.Join(util, " "),
		pct(r.MeanPageUtilization), r.PagesFreeAtEnd, r.Pages)
	fmt.Fprintf(&b, "  scheduling    %d admissions, %d preemptions, %d deferred, at most %d running\n",
		r.Admissions, r.Preemptions, r.Deferrals, r.PeakRunning)
	fmt.Fprintf(&b, "  prefix cache  hit rate %.3f (%d tokens; attention pages alone %.3f), %d evictions, %d checkpoints held\n",
		r.PrefixHitRate, r.HitTokens, r.AttentionHitRate, r.Evictions, r.Checkpoints)
	switch {
	case r.Verify == nil:
		fmt.Fprintf(&b, "  verify        skipped\n")
	case r.Verify.Passed:
		fmt.Fprintf(&b, "  verify        ok: %s\n", r.Verify.Summary())
	default:
		fmt.Fprintf(&b, "  verify        FAILED: %s\n", r.Verify.Summary())
	}
	_, err := io.WriteString(w, b.String())
	return err
}
