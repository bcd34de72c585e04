package engine

import (
	"math"
	"math/rand/v2"
)

// workloadStream is the second PCG stream word of the workload's generator.
const workloadStream = 0x776f726b6c6f6164 // "workload"

// turn is one planned request of a conversation: its new user message and
// the length of its reply.
type turn struct {
	user   []int32
	output int
	think  int // steps between the previous reply and this turn
}

// conversation is a planned chat: its system prompt, its turns, and when
// its first turn arrives.
type conversation struct {
	id      int
	system  []int32
	arrival int
	turns   []turn
}

// plan draws the conversations of w for a vocabulary of vocab tokens: the
// whole workload is fixed by w.Seed, except the replies' tokens, which the
// model generates.
func plan(w Workload, vocab int) []conversation {
	r := rand.New(rand.NewPCG(w.Seed, w.Seed^workloadStream))
	draw := func(x Range) int { return x.Min + r.IntN(x.Max-x.Min+1) }
	tokens := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(r.IntN(vocab))
		}
		return out
	}
	systems := make([][]int32, w.SystemPrompts)
	for i := range systems {
		systems[i] = tokens(draw(w.SystemLen))
	}
	var convs []conversation
	clock := 0.0
	for left := w.Requests; left > 0; {
		c := conversation{id: len(convs), system: systems[r.IntN(len(systems))], arrival: int(math.Floor(clock))}
		clock += r.ExpFloat64() / w.ArrivalRate
		n := min(1+r.IntN(w.Turns), left)
		for range n {
			c.turns = append(c.turns, turn{user: tokens(draw(w.UserLen)), output: draw(w.OutputLen), think: draw(w.ThinkSteps)})
		}
		left -= n
		convs = append(convs, c)
	}
	return convs
}
