package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/pagemanager/sim"
)

// rangeValue is a MIN-MAX flag (or N for N-N).
type rangeValue struct{ r *sim.Range }

func (v rangeValue) String() string { return v.r.String() }
func (v rangeValue) Type() string   { return "MIN-MAX" }
func (v rangeValue) Set(s string) error {
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	a, err1 := strconv.Atoi(strings.TrimSpace(lo))
	b, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return fmt.Errorf("%q: want MIN-MAX or N, non-negative integers", s)
	}
	*v.r = sim.Range{Min: a, Max: b}
	return nil
}

// genFlags are the flags that shape --generate's trace.
var genFlags = []string{"seed", "systems", "system-len", "zipf", "conversations", "turns", "concurrency", "user-len", "reply-len", "vocab"}

func newSimCmd() *cobra.Command {
	gen := sim.DefaultGenConfig()
	var (
		tracePath, capacities, policyName, outPath string
		pageSize                                   int
		generate, asJSON                           bool
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Replay a request trace through the page pool's prefix cache (vLLM's or a better eviction policy), or generate a trace",
		Long: `sim replays a request trace through kvmesh's page pool (pagemanager.Pool) under
vLLM's engine model, once per --capacity (usable pages of --page-size tokens), and
prints one row per capacity: prompt tokens, hit tokens, hit rate, evictions, skipped
requests and wall time. --json prints
  {"capacities": {"<N>": {"total_prompt_tokens", "total_hit_tokens", "hit_rate",
   "evictions", "skipped_requests", "per_request_hit_tokens": [...],
   "per_request_evictions_so_far": [...]}}}
with one per-request entry per trace request, in trace order.

The trace is JSON lines (gzip accepted), one request per line:
  {"id", "conversation", "turn", "prompt_token_ids": [...], "output_token_ids": [...]}

Requests run one at a time. A request of P prompt and N output tokens is skipped
(and counted) when ceil((P+N-1)/page size) exceeds the capacity. Otherwise its
prompt hits the longest cached run of full pages, at most floor((P-1)/page size);
the rest is allocated from the free queue, evicting cached pages lazily; its output
tokens but the last are fed one at a time, every page that fills being cached; its
pages are then freed, last page first, and stay cached until evicted.

--policy vllm is vLLM's LRU free queue and reproduces vLLM 0.16.0's KV-cache
manager exactly. --policy shared (pagemanager.EvictShared) takes pages without
cached content first and keeps shared prefixes (system prompts: pages after which
different prompts branch) while they are hit more often than private pages.
--policy lineage (pagemanager.EvictLineage) tracks conversations through their
prompts (a prompt that contains the last page of a freed request is its next turn),
learns how often a turn has a next one and how long it takes, and evicts the pages
least likely to be hit soon: those of conversations that have probably ended.

--generate writes a seeded synthetic multi-turn chat trace instead (to --out, or
stdout), shaped by --seed, --systems, --system-len, --zipf, --conversations,
--turns, --concurrency, --user-len, --reply-len and --vocab (defaults: the shape of
the reference trace). With --capacity it replays the generated trace too.

Exit codes: 0 ok, 1 the replay failed, 2 bad flags, values or trace (a malformed
trace line is named, with the field at fault).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			switch {
			case tracePath == "" && !generate:
				return badInput("sim: --trace FILE or --generate is required")
			case tracePath != "" && generate:
				return badInput("sim: --trace and --generate exclude each other")
			}
			if !generate {
				for _, name := range append(genFlags, "out") {
					if fs.Changed(name) {
						return badInput("sim: --%s needs --generate", name)
					}
				}
			}
			replay := tracePath != "" || fs.Changed("capacity")
			if !replay {
				for _, name := range []string{"page-size", "policy", "json"} {
					if fs.Changed(name) {
						return badInput("sim: --%s needs --capacity (with --generate, to replay the generated trace)", name)
					}
				}
			}
			var caps []int
			var policy sim.Policy
			if replay {
				var err error
				if !fs.Changed("capacity") {
					return badInput("sim: --capacity N[,N...] is required with --trace")
				}
				if caps, err = parseCapacities(capacities); err != nil {
					return badInput("sim: --capacity: %v", err)
				}
				if pageSize < 1 {
					return badInput("sim: --page-size %d: want a positive number of tokens", pageSize)
				}
				if policy, err = sim.ParsePolicy(policyName); err != nil {
					return badInput("--policy: %v", err)
				}
			}

			var reqs []sim.Request
			var source string
			if generate {
				var err error
				if reqs, err = sim.Generate(gen); err != nil {
					return badInput("--generate: %v", err)
				}
				source = fmt.Sprintf("generated (seed %d)", gen.Seed)
				if outPath != "" || !replay {
					if err := writeTrace(cmd.OutOrStdout(), outPath, reqs); err != nil {
						return exitError{exitFailed, err}
					}
				}
				if !replay {
					return nil
				}
			} else {
				var err error
				if reqs, err = sim.ReadTraceFile(tracePath); err != nil {
					return badInput("%v", err)
				}
				source = tracePath
			}

			results, err := sim.ReplayAll(reqs, caps, pageSize, policy)
			if err != nil {
				if errors.Is(err, sim.ErrInvalidConfig) || errors.Is(err, sim.ErrTrace) {
					return badInput("%v", err)
				}
				return exitError{exitFailed, err}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(sim.ReportOf(results))
			}
			return writeSimTable(cmd.OutOrStdout(), source, len(reqs), pageSize, policy, results)
		},
	}
	f := cmd.Flags()
	f.StringVar(&tracePath, "trace", "", "trace `FILE` to replay (JSON lines, gzip accepted)")
	f.StringVar(&capacities, "capacity", "", "pool sizes to replay at, in usable pages: `N[,N...]`")
	f.IntVar(&pageSize, "page-size", 16, "tokens per page")
	f.StringVar(&policyName, "policy", "vllm", "eviction policy: vllm, shared or lineage")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON")
	f.BoolVar(&generate, "generate", false, "generate a synthetic multi-turn chat trace")
	f.StringVar(&outPath, "out", "", "with --generate: write the trace to `FILE` instead of stdout")
	f.Uint64Var(&gen.Seed, "seed", gen.Seed, "generator seed")
	f.IntVar(&gen.Systems, "systems", gen.Systems, "number of system prompts")
	f.Var(rangeValue{&gen.SystemLen}, "system-len", "system prompt length in tokens")
	f.Float64Var(&gen.Zipf, "zipf", gen.Zipf, "skew of the system prompts' popularity (0: uniform)")
	f.IntVar(&gen.Conversations, "conversations", gen.Conversations, "number of conversations")
	f.Var(rangeValue{&gen.Turns}, "turns", "turns per conversation")
	f.IntVar(&gen.Concurrency, "concurrency", gen.Concurrency, "conversations in progress at once (their turns interleave)")
	f.Var(rangeValue{&gen.UserLen}, "user-len", "user message length in tokens")
	f.Var(rangeValue{&gen.ReplyLen}, "reply-len", "reply length in tokens")
	f.IntVar(&gen.Vocab, "vocab", gen.Vocab, "vocabulary size")
	return cmd
}

// parseCapacities parses "N[,N...]": positive, distinct page counts.
func parseCapacities(s string) ([]int, error) {
	var caps []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number of pages", part)
		}
		for _, c := range caps {
			if c == n {
				return nil, fmt.Errorf("%d is listed twice", n)
			}
		}
		caps = append(caps, n)
	}
	return caps, nil
}

// writeTrace writes reqs to path, or to stdout when path is empty.
func writeTrace(stdout io.Writer, path string, reqs []sim.Request) error {
	if path == "" {
		return sim.WriteTrace(stdout, reqs)
	}
	var buf bytes.Buffer
	if err := sim.WriteTrace(&buf, reqs); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// writeSimTable prints one row per capacity.
func writeSimTable(w io.Writer, source string, requests, pageSize int, policy sim.Policy, results []sim.Result) error {
	fmt.Fprintf(w, "trace %s: %d requests; policy %s, page size %d\n", source, requests, policy, pageSize)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "capacity\tprompt tokens\thit tokens\thit rate\tevictions\tskipped\twall\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%.4f\t%d\t%d\t%v\t\n", r.Config.Capacity, r.PromptTokens, r.HitTokens, r.HitRate(), r.Evictions, r.Skipped, r.Wall.Round(time.Microsecond))
	}
	return tw.Flush()
}
