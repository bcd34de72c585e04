package engine

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/kvmesh/kvmesh/layers/reference"
)

// Verification is the outcome of re-running requests with no cache.
type Verification struct {
	// Requests are the ids of the requests re-run.
	Requests []int `json:"requests"`
	// Tokens is the number of generated tokens compared.
	Tokens int `json:"tokens"`
	// Mismatches lists every request whose tokens differ.
	Mismatches []Mismatch `json:"mismatches,omitempty"`
	// Passed reports that every token matched.
	Passed bool `json:"passed"`
}

// Mismatch is a verified request's first token that differs from the full
// recompute's (or the error that stopped its recompute).
type Mismatch struct {
	Request int    `json:"request"`
	Index   int    `json:"index"`
	Got     int32  `json:"got"`
	Want    int32  `json:"want"`
	Error   string `json:"error,omitempty"`
}

// Summary says in one line what was verified and how it went.
func (v Verification) Summary() string {
	if v.Passed {
		return fmt.Sprintf("%d requests re-run with no cache, %d tokens: identical", len(v.Requests), v.Tokens)
	}
	m := v.Mismatches[0]
	if m.Error != "" {
		return fmt.Sprintf("%d of %d requests differ; request %d: %s", len(v.Mismatches), len(v.Requests), m.Request, m.Error)
	}
	return fmt.Sprintf("%d of %d requests differ; request %d's output token %d is %d, the full recompute gives %d",
		len(v.Mismatches), len(v.Requests), m.Request, m.Index, m.Got, m.Want)
}

// pickVerified chooses up to n finished requests to verify: in turn one
// that was preempted, one served from the prefix cache, and one of the rest
// (the paths most likely to break), the shortest of each kind first, since
// the full recompute's cost grows with the cube of the length.
func pickVerified(reqs []*request, n int) []*request {
	var kinds [3][]*request
	for _, r := range reqs {
		switch {
		case r.preempted > 0:
			kinds[0] = append(kinds[0], r)
		case r.hitTokens > 0:
			kinds[1] = append(kinds[1], r)
		default:
			kinds[2] = append(kinds[2], r)
		}
	}
	for _, k := range kinds {
		slices.SortStableFunc(k, func(a, b *request) int { return len(a.tokens) - len(b.tokens) })
	}
	var out []*request
	for len(out) < n {
		took := false
		for i := range kinds {
			if len(out) < n && len(kinds[i]) > 0 {
				out = append(out, kinds[i][0])
				kinds[i] = kinds[i][1:]
				took = true
			}
		}
		if !took {
			break
		}
	}
	slices.SortFunc(out, func(a, b *request) int { return a.id - b.id })
	return out
}

// verify re-runs up to n finished requests with Hybrid.Generate (the whole
// sequence recomputed for every token, no cache) on all cores, and compares
// their tokens with what the engine generated.
func verify(ctx context.Context, m *reference.Hybrid, reqs []*request, n int) Verification {
	picked := pickVerified(reqs, n)
	v := Verification{Passed: true}
	results := make([]*Mismatch, len(picked))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, r := range picked {
		v.Requests = append(v.Requests, r.id)
		v.Tokens += r.generated()
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := ctx.Err(); err != nil {
				results[i] = &Mismatch{Request: r.id, Error: err.Error()}
				return
			}
			want, err := m.Generate(r.prompt, r.maxOut)
			if err != nil {
				results[i] = &Mismatch{Request: r.id, Error: err.Error()}
				return
			}
			got := r.tokens[len(r.prompt):]
			for j := range want {
				if j >= len(got) || got[j] != want[j] {
					mm := &Mismatch{Request: r.id, Index: j, Want: want[j], Got: -1}
					if j < len(got) {
						mm.Got = got[j]
					}
					results[i] = mm
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, mm := range results {
		if mm != nil {
			v.Mismatches = append(v.Mismatches, *mm)
			v.Passed = false
		}
	}
	return v
}
