package sim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSimReplay replays the reference trace (463 requests, 435,998
// tokens through the pool, one Append per output token) at 512 usable
// pages with each policy, and reports requests and pool tokens per
// second. vLLM's Python KV-cache manager needs about 0.3 s per capacity
// on this trace.
func BenchmarkSimReplay(b *testing.B) {
	reqs := loadReference(b)
	tokens := 0
	for _, q := range reqs {
		tokens += len(q.Prompt) + len(q.Output) - 1
	}
	for _, pol := range []Policy{VLLM, Shared, Lineage} {
		b.Run(fmt.Sprintf("blocks=512/policy=%s", pol), func(b *testing.B) {
			cfg := Config{Capacity: 512, PageSize: 16, Policy: pol}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Replay(reqs, cfg); err != nil {
					b.Fatal(err)
				}
			}
			s := b.Elapsed().Seconds()
			b.ReportMetric(float64(len(reqs))*float64(b.N)/s, "requests/s")
			b.ReportMetric(float64(tokens)*float64(b.N)/s, "tokens/s")
		})
	}
}

// BenchmarkReadTrace parses the reference trace (2.5 MB of JSON lines).
func BenchmarkReadTrace(b *testing.B) {
	raw, err := os.ReadFile(filepath.Join(traceDir, "chat-multiturn.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadTrace(bytes.NewReader(raw)); err != nil {
			b.Fatal(err)
		}
	}
}
