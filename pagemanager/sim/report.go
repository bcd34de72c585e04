package sim

import "strconv"

// Report is the JSON form of replays at several capacities:
//
//	{"capacities": {"<N>": {"total_prompt_tokens", "total_hit_tokens", "hit_rate",
//	  "evictions", "skipped_requests", "per_request_hit_tokens": [...],
//	  "per_request_evictions_so_far": [...]}}}
//
// keyed by capacity in usable pages. The totals have the names of vLLM's
// results file (chat-multiturn.vllm.json).
type Report struct {
	Capacities map[string]ReportEntry `json:"capacities"`
}

// ReportEntry is one capacity's results in a Report.
type ReportEntry struct {
	TotalPromptTokens        int64   `json:"total_prompt_tokens"`
	TotalHitTokens           int64   `json:"total_hit_tokens"`
	HitRate                  float64 `json:"hit_rate"`
	Evictions                int64   `json:"evictions"`
	SkippedRequests          int     `json:"skipped_requests"`
	PerRequestHitTokens      []int   `json:"per_request_hit_tokens"`
	PerRequestEvictionsSoFar []int64 `json:"per_request_evictions_so_far"`
}

// ReportOf returns the report of results, one entry per capacity (a later
// result replaces an earlier one at the same capacity).
func ReportOf(results []Result) Report {
	rep := Report{Capacities: make(map[string]ReportEntry, len(results))}
	for _, r := range results {
		rep.Capacities[strconv.Itoa(r.Config.Capacity)] = ReportEntry{
			TotalPromptTokens:        r.PromptTokens,
			TotalHitTokens:           r.HitTokens,
			HitRate:                  r.HitRate(),
			Evictions:                r.Evictions,
			SkippedRequests:          r.Skipped,
			PerRequestHitTokens:      r.PerRequestHitTokens,
			PerRequestEvictionsSoFar: r.PerRequestEvictionsSoFar,
		}
	}
	return rep
}
