package sim

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGenerateShape checks every property GenConfig promises on several
// shapes: request and turn counts, the prompt of turn t+1 extending turn
// t's prompt and reply by a user message, lengths and token ranges, the
// concurrency bound, and determinism.
func TestGenerateShape(t *testing.T) {
	def := DefaultGenConfig()
	sequential := def
	sequential.Concurrency, sequential.Conversations, sequential.Seed = 1, 20, 3
	wide := GenConfig{Seed: 9, Systems: 40, SystemLen: Range{0, 30}, Zipf: 0, Conversations: 50,
		Turns: Range{1, 1}, Concurrency: 50, UserLen: Range{1, 5}, ReplyLen: Range{3, 3}, Vocab: 7}
	for name, cfg := range map[string]GenConfig{"default": def, "sequential": sequential, "wide": wide} {
		t.Run(name, func(t *testing.T) {
			reqs, err := Generate(cfg)
			require.NoError(t, err)
			last := map[int]Request{} // each conversation's previous turn
			active := map[int]bool{}
			maxActive, turns := 0, 0
			ends := map[int]int{} // request index of each conversation's last turn
			for i, q := range reqs {
				ends[q.Conversation] = i
			}
			for i, q := range reqs {
				require.Equal(t, i, q.ID)
				assert.True(t, cfg.ReplyLen.Min <= len(q.Output) && len(q.Output) <= cfg.ReplyLen.Max, "reply length %d", len(q.Output))
				for _, tok := range append(slices.Clone(q.Prompt), q.Output...) {
					require.True(t, tok >= 0 && int(tok) < cfg.Vocab, "token %d", tok)
				}
				prev, seen := last[q.Conversation]
				var user []int32
				if !seen {
					require.Zero(t, q.Turn)
					require.Less(t, q.Conversation, cfg.Conversations)
					user = q.Prompt[max(0, len(q.Prompt)-cfg.UserLen.Min):]
					assert.LessOrEqual(t, len(q.Prompt), cfg.SystemLen.Max+cfg.UserLen.Max)
					assert.GreaterOrEqual(t, len(q.Prompt), cfg.SystemLen.Min+cfg.UserLen.Min)
				} else {
					require.Equal(t, prev.Turn+1, q.Turn)
					history := append(slices.Clone(prev.Prompt), prev.Output...)
					require.Equal(t, history, q.Prompt[:len(history)], "turn %d of conversation %d extends turn %d", q.Turn, q.Conversation, prev.Turn)
					user = q.Prompt[len(history):]
					assert.True(t, cfg.UserLen.Min <= len(user) && len(user) <= cfg.UserLen.Max, "user message of %d tokens", len(user))
				}
				assert.NotEmpty(t, user)
				last[q.Conversation] = q
				active[q.Conversation] = true
				maxActive = max(maxActive, len(active))
				if ends[q.Conversation] == i {
					delete(active, q.Conversation)
				}
			}
			require.Len(t, last, cfg.Conversations)
			for _, q := range last {
				n := q.Turn + 1
				assert.True(t, cfg.Turns.Min <= n && n <= cfg.Turns.Max, "%d turns", n)
				turns += n
			}
			assert.Len(t, reqs, turns)
			assert.LessOrEqual(t, maxActive, cfg.Concurrency)
			if cfg.Concurrency == 1 {
				for i := 1; i < len(reqs); i++ {
					assert.GreaterOrEqual(t, reqs[i].Conversation, reqs[i-1].Conversation, "one conversation at a time")
				}
			}
			again, err := Generate(cfg)
			require.NoError(t, err)
			assert.Equal(t, reqs, again, "same config, same trace")
			cfg.Seed++
			other, err := Generate(cfg)
			require.NoError(t, err)
			assert.NotEqual(t, reqs, other, "another seed, another trace")
		})
	}
}

// int32Bytes is a map key for a token slice.
func int32Bytes(t []int32) []byte {
	b := make([]byte, 0, 4*len(t))
	for _, x := range t {
		b = append(b, byte(x), byte(x>>8), byte(x>>16), byte(x>>24))
	}
	return b
}

// TestGenerateSystemPrompts checks that conversations share system
// prompts, and that Zipf skews which: with 1 prompt every conversation
// starts the same; with a strong skew the first prompt starts most.
func TestGenerateSystemPrompts(t *testing.T) {
	cfg := DefaultGenConfig()
	cfg.SystemLen = Range{32, 32}
	count := func(cfg GenConfig) map[string]int {
		reqs, err := Generate(cfg)
		require.NoError(t, err)
		n := map[string]int{}
		for _, q := range reqs {
			if q.Turn == 0 {
				n[string(int32Bytes(q.Prompt[:32]))]++
			}
		}
		return n
	}
	cfg.Systems = 1
	assert.Len(t, count(cfg), 1)
	cfg.Systems, cfg.Zipf = 8, 0
	uniform := count(cfg)
	assert.Len(t, uniform, 8)
	cfg.Zipf = 3
	skewed := count(cfg)
	top := 0
	for _, n := range skewed {
		top = max(top, n)
	}
	assert.Greater(t, top, cfg.Conversations/2, "1/(k+1)^3: the first prompt has 83%% of the weight")
}

func TestGenConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		edit func(*GenConfig)
		want string
	}{
		{func(c *GenConfig) { c.Systems = 0 }, "systems 0"},
		{func(c *GenConfig) { c.Conversations = -1 }, "conversations -1"},
		{func(c *GenConfig) { c.Concurrency = 0 }, "concurrency 0"},
		{func(c *GenConfig) { c.Turns = Range{0, 3} }, "turns 0-3"},
		{func(c *GenConfig) { c.Turns = Range{4, 3} }, "turns 4-3"},
		{func(c *GenConfig) { c.SystemLen = Range{-1, 3} }, "system length -1-3"},
		{func(c *GenConfig) { c.UserLen = Range{0, 0} }, "user length 0-0"},
		{func(c *GenConfig) { c.ReplyLen = Range{5, 2} }, "reply length 5-2"},
		{func(c *GenConfig) { c.Zipf = -0.5 }, "zipf -0.5"},
		{func(c *GenConfig) { c.Vocab = 0 }, "vocabulary 0"},
	} {
		cfg := DefaultGenConfig()
		tt.edit(&cfg)
		err := cfg.Validate()
		assert.ErrorIs(t, err, ErrInvalidConfig, tt.want)
		assert.ErrorContains(t, err, tt.want)
		_, err = Generate(cfg)
		assert.ErrorIs(t, err, ErrInvalidConfig)
	}
	require.NoError(t, DefaultGenConfig().Validate())
}
