package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Range is an inclusive range of lengths, in tokens or turns.
type Range struct{ Min, Max int }

// String returns "MIN-MAX".
func (r Range) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// GenConfig shapes a synthetic multi-turn chat trace. The zero value is
// not valid; DefaultGenConfig is shaped like the reference trace.
type GenConfig struct {
	// Seed selects the trace: the same config gives the same trace.
	Seed uint64
	// Systems is the number of system prompts, each SystemLen tokens.
	Systems   int
	SystemLen Range
	// Zipf skews the system prompts' popularity: conversation c starts
	// with prompt k (0-based) with probability proportional to
	// 1/(k+1)^Zipf; 0 is uniform.
	Zipf float64
	// Conversations is the number of conversations, each of Turns turns
	// (uniform in the range).
	Conversations int
	Turns         Range
	// Concurrency is the number of conversations in progress at once:
	// each request is the next turn of one of them, chosen uniformly;
	// when one ends, the next conversation starts. 1 replays the
	// conversations one after the other.
	Concurrency int
	// UserLen and ReplyLen are the lengths of each turn's new user
	// message and of the reply.
	UserLen, ReplyLen Range
	// Vocab is the vocabulary size: token ids are uniform in 0..Vocab-1.
	Vocab int
}

// DefaultGenConfig returns the shape of the reference trace
// chat-multiturn.jsonl: 8 system prompts of 200-600 tokens (Zipf 1),
// 120 conversations of 2-6 turns, 15 at a time, user messages of 20-200
// tokens, replies of 10-150, a vocabulary of 32000, seed 1.
func DefaultGenConfig() GenConfig {
	return GenConfig{
		Seed: 1, Systems: 8, SystemLen: Range{200, 600}, Zipf: 1,
		Conversations: 120, Turns: Range{2, 6}, Concurrency: 15,
		UserLen: Range{20, 200}, ReplyLen: Range{10, 150}, Vocab: 32000,
	}
}

// Validate checks that the counts are positive, the ranges ordered with
// positive lengths (turns at least 1, system prompts at least 0 tokens),
// Zipf is finite and non-negative, and the vocabulary in 1..2^31.
func (c GenConfig) Validate() error {
	for _, f := range []struct {
		name string
		n    int
	}{{"systems", c.Systems}, {"conversations", c.Conversations}, {"concurrency", c.Concurrency}} {
		if f.n < 1 {
			return fmt.Errorf("%w: %s %d, want at least 1", ErrInvalidConfig, f.name, f.n)
		}
	}
	for _, f := range []struct {
		name string
		r    Range
		min  int
	}{{"system length", c.SystemLen, 0}, {"turns", c.Turns, 1}, {"user length", c.UserLen, 1}, {"reply length", c.ReplyLen, 1}} {
		if f.r.Min < f.min || f.r.Max < f.r.Min {
			return fmt.Errorf("%w: %s %v, want %d <= min <= max", ErrInvalidConfig, f.name, f.r, f.min)
		}
	}
	if c.Zipf < 0 || math.IsNaN(c.Zipf) || math.IsInf(c.Zipf, 0) {
		return fmt.Errorf("%w: zipf %g, want a finite number >= 0", ErrInvalidConfig, c.Zipf)
	}
	if c.Vocab < 1 || c.Vocab > math.MaxInt32+1 {
		return fmt.Errorf("%w: vocabulary %d, want 1..%d", ErrInvalidConfig, c.Vocab, math.MaxInt32+1)
	}
	return nil
}

// Generate returns a seeded synthetic multi-turn chat trace in the format
// of the reference trace. Each conversation picks a system prompt; the
// prompt of its turn t is the system prompt, every earlier user message
// and reply, then a new user message; the output is the reply. Requests
// are numbered in trace order. An invalid cfg is an error wrapping
// ErrInvalidConfig.
func Generate(cfg GenConfig) ([]Request, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x73696d7472616365))
	tokens := func(r Range) []int32 {
		t := make([]int32, r.Min+rng.IntN(r.Max-r.Min+1))
		for i := range t {
			t[i] = int32(rng.IntN(cfg.Vocab))
		}
		return t
	}
	systems := make([][]int32, cfg.Systems)
	weights := make([]float64, cfg.Systems) // cumulative
	total := 0.0
	for k := range systems {
		systems[k] = tokens(cfg.SystemLen)
		total += 1 / math.Pow(float64(k+1), cfg.Zipf)
		weights[k] = total
	}
	pickSystem := func() []int32 {
		x := rng.Float64() * total
		for k, w := range weights {
			if x < w {
				return systems[k]
			}
		}
		return systems[len(systems)-1]
	}
	type conversation struct {
		id, turn, turns int
		history         []int32
	}
	var active []*conversation
	started := 0
	var reqs []Request
	for started < cfg.Conversations || len(active) > 0 {
		for len(active) < cfg.Concurrency && started < cfg.Conversations {
			turns := cfg.Turns.Min + rng.IntN(cfg.Turns.Max-cfg.Turns.Min+1)
			active = append(active, &conversation{id: started, turns: turns, history: pickSystem()})
			started++
		}
		j := rng.IntN(len(active))
		c := active[j]
		prompt := append(append(make([]int32, 0, len(c.history)+cfg.UserLen.Max), c.history...), tokens(cfg.UserLen)...)
		reply := tokens(cfg.ReplyLen)
		reqs = append(reqs, Request{ID: len(reqs), Conversation: c.id, Turn: c.turn, Prompt: prompt, Output: reply})
		c.history = append(prompt[:len(prompt):len(prompt)], reply...)
		c.turn++
		if c.turn == c.turns {
			active = append(active[:j], active[j+1:]...)
		}
	}
	return reqs, nil
}
