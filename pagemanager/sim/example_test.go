package sim_test

import (
	"fmt"

	"github.com/kvmesh/kvmesh/pagemanager/sim"
)

// A system prompt of 8 tokens (two pages of 4), a conversation of two
// turns and a second conversation. Turn 0 caches its 9 prompt and first
// output token: pages [1..4] and [5..8]. Turn 1 may hit 3 pages (its last
// prompt token is recomputed) but the third, [9 10 11 12], was never full
// in turn 0: it hits 8 tokens. The second conversation hits the system
// prompt.
func ExampleReplay() {
	sys := []int32{1, 2, 3, 4, 5, 6, 7, 8}
	trace := []sim.Request{
		{ID: 0, Conversation: 0, Turn: 0, Prompt: append(sys[:8:8], 9), Output: []int32{10, 11}},
		{ID: 1, Conversation: 0, Turn: 1, Prompt: append(sys[:8:8], 9, 10, 11, 12, 13), Output: []int32{14}},
		{ID: 2, Conversation: 1, Turn: 0, Prompt: append(sys[:8:8], 20, 21), Output: []int32{22}},
	}
	r, err := sim.Replay(trace, sim.Config{Capacity: 8, PageSize: 4, Policy: sim.VLLM})
	if err != nil {
		panic(err)
	}
	fmt.Println("hits per request:", r.PerRequestHitTokens)
	fmt.Printf("%d of %d prompt tokens hit (%.2f), %d evictions\n", r.HitTokens, r.PromptTokens, r.HitRate(), r.Evictions)
	// Output:
	// hits per request: [0 8 8]
	// 16 of 32 prompt tokens hit (0.50), 0 evictions
}
