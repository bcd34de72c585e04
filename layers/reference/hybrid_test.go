package reference

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tinyHybrid is a small model whose pattern is given: fast enough to
// recompute whole sequences in tests.
func tinyHybrid(t *testing.T, pattern string, seed uint64) *Hybrid {
	t.Helper()
	cfg := DefaultHybridConfig()
	cfg.Seed = seed
	cfg.Vocab, cfg.Hidden = 64, 16
	cfg.LightningBlock = 5 // several blocks in the full path
	layers, err := ParseLayerPattern(pattern)
	require.NoError(t, err)
	cfg.Layers = layers
	m, err := NewHybrid(cfg)
	require.NoError(t, err)
	return m
}

func randTokens(r *rand.Rand, n, vocab int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.IntN(vocab))
	}
	return out
}

// hybridSeq is one sequence driven through HybridCaches by serve.
type hybridSeq struct {
	prompt  []int32
	gen     int // tokens to generate
	slot    int
	pages   []int32
	tokens  []int32 // prompt and generated tokens
	done    int     // tokens in the caches
	restore *RecurrentState
	ckpts   []StateCheckpoint
}

// serve runs the sequences concurrently, each step giving every unfinished
// sequence its next prefill chunk (of at most chunk tokens) or its decode
// token, until each has generated its tokens; it returns what each
// generated.
func serve(t *testing.T, m *Hybrid, c *HybridCaches, seqs []*hybridSeq, chunk, every int) [][]int32 {
	t.Helper()
	for _, s := range seqs {
		if s.tokens == nil {
			s.tokens = append([]int32(nil), s.prompt...)
		}
	}
	for range 10000 {
		var rows []StepRow
		var who []*hybridSeq
		for _, s := range seqs {
			if len(s.tokens)-len(s.prompt) >= s.gen {
				continue
			}
			n := min(chunk, len(s.tokens)-s.done)
			rows = append(rows, StepRow{Slot: s.slot, Tokens: s.tokens[s.done : s.done+n], Start: s.done, PageTable: s.pages,
				Restore: s.restore, CheckpointEvery: every})
			s.restore = nil
			who = append(who, s)
		}
		if len(rows) == 0 {
			break
		}
		res, err := m.Step(rows, c)
		require.NoError(t, err)
		for i, s := range who {
			s.done += len(rows[i].Tokens)
			s.ckpts = append(s.ckpts, res[i].Checkpoints...)
			if s.done == len(s.tokens) {
				s.tokens = append(s.tokens, res[i].Next)
			}
		}
	}
	out := make([][]int32, len(seqs))
	for i, s := range seqs {
		out[i] = s.tokens[len(s.prompt):]
	}
	return out
}

func pageTable(first, n, total int) []int32 {
	pt := make([]int32, total)
	for i := range n {
		pt[i] = int32(first + i)
	}
	return pt
}

// The cached path (chunked prefill at several chunk lengths, sequences of
// different lengths decoding side by side in their slots) picks exactly the
// tokens of the full recompute, for every layer pattern.
func TestHybridCachedMatchesFullRecompute(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		chunk   int
	}{
		{"attention,mamba2,lightning,attention", 7},
		{"attention,mamba2,lightning,attention", 1},
		{"mamba2,lightning", 16},
		{"attention,attention", 5},
		{"lightning,attention,mamba2", 64},
	} {
		t.Run(fmt.Sprintf("%s/chunk=%d", tc.pattern, tc.chunk), func(t *testing.T) {
			m := tinyHybrid(t, tc.pattern, 7)
			const ps, maxLen = 4, 40
			meta, err := m.CacheMetadata(3, 1+3*maxLen/ps, ps, maxLen)
			require.NoError(t, err)
			c, err := NewHybridCaches(meta)
			require.NoError(t, err)
			r := rand.New(rand.NewPCG(3, 4))
			var seqs []*hybridSeq
			for i, n := range []int{13, 1, 22} {
				seqs = append(seqs, &hybridSeq{prompt: randTokens(r, n, 64), gen: 9 - i, slot: 2 - i, pages: pageTable(1+i*maxLen/ps, maxLen/ps, maxLen/ps)})
			}
			got := serve(t, m, c, seqs, tc.chunk, 0)
			for i, s := range seqs {
				want, err := m.Generate(s.prompt, s.gen)
				require.NoError(t, err)
				assert.Equal(t, want, got[i], "sequence %d", i)
			}
		})
	}
}

// A sequence that reuses another's pages up to a page boundary and starts
// its recurrent layers from the checkpoint taken there generates what the
// full recompute of its own prompt does; starting from a wrong state (zero)
// does not.
func TestHybridRestoreFromCheckpoint(t *testing.T) {
	m := tinyHybrid(t, "attention,mamba2,lightning,attention", 11)
	const ps, maxLen, per = 4, 48, 12
	meta, err := m.CacheMetadata(2, 1+2*per, ps, maxLen)
	require.NoError(t, err)
	c, err := NewHybridCaches(meta)
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(5, 6))
	shared := randTokens(r, 10, 64)
	a := &hybridSeq{prompt: append(append([]int32(nil), shared...), randTokens(r, 5, 64)...), gen: 4, slot: 0, pages: pageTable(1, per, per)}
	serve(t, m, c, []*hybridSeq{a}, 6, ps)
	require.Len(t, a.ckpts, 4, "boundaries 4, 8, 12, 16 of 18 tokens")
	assert.Equal(t, []int{4, 8, 12, 16}, []int{a.ckpts[0].Tokens, a.ckpts[1].Tokens, a.ckpts[2].Tokens, a.ckpts[3].Tokens})
	for _, ck := range a.ckpts {
		require.Len(t, ck.State.Layers, 2)
		for _, l := range ck.State.Layers {
			require.NotEmpty(t, l)
		}
	}

	// b shares a's first two pages (8 tokens) and restores the state at 8.
	bPrompt := append(append([]int32(nil), shared...), randTokens(r, 7, 64)...)
	want, err := m.Generate(bPrompt, 6)
	require.NoError(t, err)
	run := func(restore *RecurrentState) []int32 {
		pt := pageTable(1+per, per, per)
		copy(pt, a.pages[:2])
		before := *c
		b := &hybridSeq{prompt: bPrompt, gen: 6, slot: 1, pages: pt, done: 8, restore: restore}
		got := serve(t, m, c, []*hybridSeq{b}, 5, 0)[0]
		*c = before // the caches are values: drop b's writes
		return got
	}
	assert.Equal(t, want, run(&a.ckpts[1].State))
	zero := RecurrentState{Layers: make([][]float64, 2)}
	for i, l := range a.ckpts[1].State.Layers {
		zero.Layers[i] = make([]float64, len(l))
	}
	assert.NotEqual(t, want, run(&zero), "a wrong recurrent state changes the tokens")
}

// Same seed, same weights and tokens; another seed, other tokens.
func TestHybridDeterministicWeights(t *testing.T) {
	prompt := []int32{1, 2, 3, 4, 5}
	a, err := tinyHybrid(t, "a,m,l", 1).Generate(prompt, 8)
	require.NoError(t, err)
	b, err := tinyHybrid(t, "a,m,l", 1).Generate(prompt, 8)
	require.NoError(t, err)
	c, err := tinyHybrid(t, "a,m,l", 2).Generate(prompt, 8)
	require.NoError(t, err)
	assert.Equal(t, a, b)
	assert.NotEqual(t, a, c)
}

func TestParseLayerPattern(t *testing.T) {
	got, err := ParseLayerPattern(" a, mamba2 ,L,attention")
	require.NoError(t, err)
	assert.Equal(t, []LayerKind{LayerAttention, LayerMamba2, LayerLightning, LayerAttention}, got)
	assert.Equal(t, "attention,mamba2,lightning,attention", FormatLayerPattern(got))
	for _, bad := range []string{"", "a,,m", "mamba", "x"} {
		_, err := ParseLayerPattern(bad)
		assert.ErrorIs(t, err, ErrInput, bad)
	}
}

func TestHybridConfigValidate(t *testing.T) {
	require.NoError(t, DefaultHybridConfig().Validate())
	for _, tc := range []struct {
		edit func(*HybridConfig)
		msg  string
	}{
		{func(c *HybridConfig) { c.Vocab = 0 }, "vocab is 0"},
		{func(c *HybridConfig) { c.Hidden = -1 }, "hidden is -1"},
		{func(c *HybridConfig) { c.Layers = nil }, "no layers"},
		{func(c *HybridConfig) { c.KVHeads = 3 }, "not a multiple of kv_heads 3"},
		{func(c *HybridConfig) { c.HeadDim = 7 }, "head_dim 7 is odd"},
		{func(c *HybridConfig) { c.Mamba2Groups = 3 }, "mamba2_groups 3"},
		{func(c *HybridConfig) { c.RopeTheta = -1 }, "rope_theta -1"},
		{func(c *HybridConfig) { c.Layers = []LayerKind{"mlp"} }, `kind "mlp"`},
	} {
		cfg := DefaultHybridConfig()
		tc.edit(&cfg)
		err := cfg.Validate()
		require.ErrorIs(t, err, ErrInput)
		assert.Contains(t, err.Error(), tc.msg)
		_, err = NewHybrid(cfg)
		assert.ErrorIs(t, err, ErrInput)
	}
}

func TestHybridStepBadRows(t *testing.T) {
	m := tinyHybrid(t, "a,m,l", 1)
	meta, err := m.CacheMetadata(2, 9, 4, 16)
	require.NoError(t, err)
	c, err := NewHybridCaches(meta)
	require.NoError(t, err)
	pt := pageTable(1, 4, 4)
	for _, tc := range []struct {
		rows []StepRow
		msg  string
	}{
		{nil, "no rows"},
		{[]StepRow{{Slot: 0, PageTable: pt}}, "row 0 has no tokens"},
		{[]StepRow{{Slot: 0, Tokens: []int32{64}, PageTable: pt}}, "token 64 at index 0"},
		{[]StepRow{{Slot: 0, Tokens: []int32{1}, PageTable: pt}, {Slot: 0, Tokens: []int32{1}, PageTable: pt}}, "share slot 0"},
		{[]StepRow{{Slot: 0, Tokens: []int32{1}, PageTable: pt, Restore: &RecurrentState{}}}, "restores a state at position 0"},
		{[]StepRow{{Slot: 0, Tokens: []int32{1}, Start: 4, PageTable: pt, Restore: &RecurrentState{}}}, "restores 0 layer states"},
		{[]StepRow{{Slot: 5, Tokens: []int32{1}, PageTable: pt}}, "slot 5 is outside"},
		{[]StepRow{{Slot: 0, Tokens: []int32{1}, Start: -1, PageTable: pt}}, "start -1"},
	} {
		_, err := m.Step(tc.rows, c)
		require.Error(t, err, tc.msg)
		assert.Contains(t, err.Error(), tc.msg)
	}
	_, err = m.Step([]StepRow{{Slot: 0, Tokens: []int32{1, 2, 3, 4, 5}, PageTable: pt[:1]}}, c)
	assert.Error(t, err, "a page table too short for the chunk")
}
