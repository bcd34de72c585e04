package pagemanager

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/stretchr/testify/require"
)

// TestDataDriven runs the scripts in testdata/pool: each shows block
// tables, refcounts, the free queue and the cached keys after alloc, fork,
// append, free and evict. Regenerate with -rewrite, then review the diff.
//
// Commands (tokens go in the input, as numbers and inclusive ranges a..b):
//
//	init pages=N size=S [caching] [hybrid] [events]
//	add seq=ID [recompute=R] [extra=(K,...)]     <tokens>
//	append seq=ID                                <tokens>
//	lookup [recompute=R] [extra=(K,...)]         <tokens>
//	fork src=ID dst=ID
//	free seq=ID
//	evict n=N
//	checkpoint seq=ID tokens=T id=C
//	reset
//	events      (TakeEvents)
//	dropped     (TakeDroppedCheckpoints)
//	describe
//
// The pool's invariants are checked after every command.
func TestDataDriven(t *testing.T) {
	datadriven.Walk(t, "testdata/pool", func(t *testing.T, path string) {
		var p *Pool
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "init" && p == nil {
				t.Fatalf("%s: %s before init", d.Pos, d.Cmd)
			}
			out := runCommand(t, &p, d)
			require.NoError(t, p.checkInvariants(), "%s: after %s", d.Pos, d.Cmd)
			return out
		})
	})
}

// runCommand runs one datadriven command on *pp and returns its output.
func runCommand(t *testing.T, pp **Pool, d *datadriven.TestData) string {
	p := *pp
	arg := func(key string) int {
		var v int
		d.ScanArgs(t, key, &v)
		return v
	}
	optArg := func(key string) int {
		if !d.HasArg(key) {
			return 0
		}
		return arg(key)
	}
	extra := func() []string {
		for _, a := range d.CmdArgs {
			if a.Key == "extra" {
				return a.Vals
			}
		}
		return nil
	}
	withState := func(head string, err error) string {
		if err != nil {
			return "error: " + err.Error() + "\n" + p.Describe()
		}
		return head + "\n" + p.Describe()
	}
	switch d.Cmd {
	case "init":
		cfg := PoolConfig{
			NumPages:      arg("pages"),
			PageSize:      arg("size"),
			PrefixCaching: d.HasArg("caching"),
			Hybrid:        d.HasArg("hybrid"),
			Events:        d.HasArg("events"),
		}
		np, err := NewPool(cfg)
		if err != nil {
			return "error: " + err.Error()
		}
		*pp = np
		return np.Describe()
	case "add":
		st, err := p.Add(SeqID(arg("seq")), Request{Tokens: parseTokens(t, d.Input), Extra: extra(), Recompute: optArg("recompute")})
		return withState(formatStep(st), err)
	case "append":
		st, err := p.Append(SeqID(arg("seq")), parseTokens(t, d.Input))
		return withState(formatStep(st), err)
	case "lookup":
		h, err := p.Lookup(parseTokens(t, d.Input), extra(), optArg("recompute"))
		if err != nil {
			return "error: " + err.Error()
		}
		return fmt.Sprintf("hit %d tokens, pages %v, restore %d", h.Tokens, h.Pages, h.Restore)
	case "fork":
		err := p.Fork(SeqID(arg("src")), SeqID(arg("dst")))
		return withState("ok", err)
	case "free":
		err := p.Free(SeqID(arg("seq")))
		return withState("ok", err)
	case "evict":
		n := p.Evict(arg("n"))
		return withState(fmt.Sprintf("evicted %d", n), nil)
	case "checkpoint":
		stored, err := p.PutCheckpoint(SeqID(arg("seq")), arg("tokens"), Checkpoint(arg("id")))
		return withState(fmt.Sprintf("stored %v", stored), err)
	case "reset":
		return withState("ok", p.ResetPrefixCache())
	case "events":
		return formatEvents(p.TakeEvents())
	case "dropped":
		return fmt.Sprintf("dropped %v", p.TakeDroppedCheckpoints())
	case "describe":
		return p.Describe()
	}
	t.Fatalf("%s: unknown command %q", d.Pos, d.Cmd)
	return ""
}

// parseTokens parses numbers and inclusive ranges a..b, separated by
// spaces or newlines.
func parseTokens(t testing.TB, s string) []int32 {
	var toks []int32
	for _, f := range strings.Fields(s) {
		lo, hi, isRange := strings.Cut(f, "..")
		a, err := strconv.Atoi(lo)
		require.NoError(t, err, "token %q", f)
		b := a
		if isRange {
			b, err = strconv.Atoi(hi)
			require.NoError(t, err, "token %q", f)
		}
		for v := a; v <= b; v++ {
			toks = append(toks, int32(v))
		}
	}
	return toks
}

// formatStep prints the fields of a Step that are set.
func formatStep(s Step) string {
	out := fmt.Sprintf("hit %d, new %d, evicted %d", s.HitTokens, s.NewPages, s.Evicted)
	if len(s.Copies) > 0 {
		out += fmt.Sprintf(", copies %v", s.Copies)
	}
	if s.Restore != NoCheckpoint {
		out += fmt.Sprintf(", restore %d", s.Restore)
	}
	return out
}

// formatEvents prints events one per line, keys shortened.
func formatEvents(evs []Event) string {
	if len(evs) == 0 {
		return "no events"
	}
	var b strings.Builder
	shorts := func(ks []Key) string {
		s := make([]string, len(ks))
		for i, k := range ks {
			s[i] = k.short()
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	for _, e := range evs {
		switch e := e.(type) {
		case BlockStored:
			fmt.Fprintf(&b, "%d stored %s parent %s tokens %v size %d extra %v\n", e.Seq, shorts(e.Hashes), e.Parent.short(), e.TokenIDs, e.PageSize, e.ExtraKeys)
		case BlockRemoved:
			fmt.Fprintf(&b, "%d removed %s\n", e.Seq, shorts(e.Hashes))
		case AllBlocksCleared:
			fmt.Fprintf(&b, "%d cleared\n", e.Seq)
		}
	}
	return b.String()
}
