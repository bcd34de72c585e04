package pagemanager

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkPoolAllocFree adds a sequence of the given number of pages and
// frees it, without prefix caching: pages come from the head of the free
// queue and go back to its tail. 64 other sequences stay live meanwhile,
// as in a serving pool. pairs/s counts page alloc+free pairs (the design
// budget is at least 20 M pairs/s on one core).
func BenchmarkPoolAllocFree(b *testing.B) {
	for _, pages := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("pages=%d", pages), func(b *testing.B) {
			p, err := NewPool(PoolConfig{NumPages: 1024, PageSize: 16})
			if err != nil {
				b.Fatal(err)
			}
			for id := range SeqID(64) {
				if _, err := p.Add(1000+id, Request{Tokens: make([]int32, 16)}); err != nil {
					b.Fatal(err)
				}
			}
			req := Request{Tokens: make([]int32, pages*16)}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Add(1, req); err != nil {
					b.Fatal(err)
				}
				if err := p.Free(1); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(pages)*float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
		})
	}
}

// BenchmarkPrefixLookup looks up a prompt of N tokens all of whose full
// pages are cached (in the free queue): one SHA-256 and one map probe per
// page of 16 tokens.
func BenchmarkPrefixLookup(b *testing.B) {
	for _, n := range []int{1 << 10, 8 << 10, 32 << 10} {
		b.Run(fmt.Sprintf("tokens=%dk", n>>10), func(b *testing.B) {
			p, err := NewPool(PoolConfig{NumPages: n/16 + 2, PageSize: 16, PrefixCaching: true})
			if err != nil {
				b.Fatal(err)
			}
			toks := randTokens(rand.New(rand.NewPCG(1, 1)), n, 32000)
			if _, err := p.Add(1, Request{Tokens: toks}); err != nil {
				b.Fatal(err)
			}
			if err := p.Free(1); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(4 * n))
			b.ReportAllocs()
			for b.Loop() {
				h, err := p.Lookup(toks, nil, 1)
				if err != nil || h.Tokens != (n-1)/16*16 {
					b.Fatalf("hit %d tokens, %v", h.Tokens, err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/token")
		})
	}
}

// BenchmarkChatSimulation replays the seeded synthetic chat workload of
// TestChatSimulation with vLLM's rules and reports the prefix hit rate and
// the evictions per replay.
func BenchmarkChatSimulation(b *testing.B) {
	reqs := chatWorkload(1, 8, 60)
	for _, blocks := range []int{128, 512, 2048} {
		b.Run(fmt.Sprintf("blocks=%d", blocks), func(b *testing.B) {
			var r replayResult
			for b.Loop() {
				p, err := NewPool(PoolConfig{NumPages: blocks + 1, PageSize: 16, PrefixCaching: true})
				if err != nil {
					b.Fatal(err)
				}
				r = replayVLLM(b, p, reqs)
			}
			b.ReportMetric(float64(r.HitTokens)/float64(r.PromptTokens), "hit-rate")
			b.ReportMetric(float64(r.Evictions), "evictions")
		})
	}
}
