package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/metric"
	"go.yaml.in/yaml/v3"
	"golang.org/x/term"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/engine"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

// layersValue is the --layers flag: a layer pattern.
type layersValue struct{ p *[]reference.LayerKind }

func (v layersValue) String() string { return reference.FormatLayerPattern(*v.p) }
func (v layersValue) Type() string   { return "pattern" }
func (v layersValue) Set(s string) error {
	kinds, err := reference.ParseLayerPattern(s)
	if err != nil {
		return err
	}
	*v.p = kinds
	return nil
}

// runOutput is the --json form of a run: the engine's report and the
// golden-vector parity of the caches.
type runOutput struct {
	engine.Report
	Parity *parityCount `json:"parity,omitempty"`
	// Snapshots are the files --snapshot wrote, one per cache.
	Snapshots []string `json:"snapshots,omitempty"`
}

type parityCount struct {
	Passed int `json:"passed"`
	Failed int `json:"failed"`
}

func newRunCmd() *cobra.Command {
	cfg := engine.DefaultConfig()
	var (
		configFile, progress string
		snapshotDir          string
		metricsAddr          string
		asJSON, doVerify     bool
		doParity, printCfg   bool
		fault                string
		cl                   clusterFlags
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Serve a synthetic chat workload with continuous batching on the embedded runtime, and report",
		Long: `run serves a seeded synthetic chat workload on kvmesh's embedded actor runtime with a
tiny hybrid model (attention layers on the paged KV cache, Mamba2 and lightning layers
on their state caches; deterministic random weights) and prints a report.

The workload: conversations of 1..--turns turns over a few shared system prompts;
every turn is a request whose prompt is the system prompt, the earlier turns and a
new user message; lengths are drawn uniformly from their ranges, conversations
arrive as a Poisson process of --arrival-rate per step, and a conversation's next
turn comes --think-min..--think-max steps after its reply.

The scheduler does continuous batching: each step decodes one token of every
running sequence and fills the rest of --token-budget with prefill chunks, admitting
waiting requests while slots and pages last. Pages come from the cache's page-manager
actor (a pagemanager.Pool with prefix caching: a request reuses the longest cached
prefix; in a hybrid model only up to a page boundary whose recurrent-state
checkpoint the engine holds). When pages run out the latest admitted sequence is
preempted: its pages are freed and it is recomputed later.

--verify (on by default) re-runs a sample of requests with no cache at all,
recomputing the whole sequence for each token, and requires the same tokens; the
golden-vector parity of the caches (kvmesh parity) runs too (--parity).

With --members (or --provider etcd --etcd) the caches' layers live on a kvmesh
cluster instead (kvmesh node members; the page pool and the scheduler stay in this
process, as vLLM's scheduler keeps its KV-cache manager): the same report comes out.

--snapshot DIR writes, once the last step has committed, each cache's final version
as DIR/<cache id>.safetensors: kv (the paged KV cache), mamba2 and lightning (when the
model has such layers), each in its kind's cache snapshot format (kvmesh inspect reads
them; so does Python's safetensors). DIR is created if missing; a file that already
exists there is never overwritten: the run refuses to start (exit 2) and names it.
Snapshots are written before verification, so a run that fails it still leaves them.

--metrics-listen host:port serves the runtime's metrics for Prometheus on
http://host:port/metrics while the run lasts: kvmesh_cache_request_duration_seconds
(by cache, op and code) and the kv pool's kvmesh_pool_prompt_tokens_total,
kvmesh_pool_hit_tokens_total, kvmesh_pool_evictions_total and kvmesh_pool_free_pages.

Settings come from the defaults, then --config FILE (YAML or JSON: the keys model,
workload, scheduler and verify, as --print-config prints them), then the flags.

Exit codes: 0 ok, 1 verification, parity or the run failed, 2 bad flags or config
(including a workload whose request cannot fit the page budget alone).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configFile != "" {
				if err := loadConfig(cmd.Flags(), configFile, &cfg); err != nil {
					return err
				}
			}
			if !doVerify {
				cfg.Verify = 0
			}
			cfg.Fault = engine.Fault(fault)
			if err := cfg.Validate(); err != nil {
				return badInput("%v", err)
			}
			if printCfg {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cfg)
			}
			var snapshots []string
			if snapshotDir != "" {
				if err := prepareSnapshotDir(snapshotDir, cfg.CacheIDs()); err != nil {
					return err
				}
				cfg.Snapshot = func(id string, v actors.Version) error {
					path, err := writeSnapshot(snapshotDir, id, v)
					if err == nil {
						snapshots = append(snapshots, path)
					}
					return err
				}
			}
			var mode string
			switch progress {
			case "auto":
				mode = "lines"
				if f, ok := cmd.ErrOrStderr().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					mode = "bar"
				}
			case "bar", "lines", "none":
				mode = progress
			default:
				return badInput("--progress %q: want auto, bar, lines or none", progress)
			}
			stop := startProgress(&cfg, mode, cmd.ErrOrStderr())
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer cancel()
			var (
				rep engine.Report
				err error
			)
			var meter metric.MeterProvider
			if metricsAddr != "" {
				mp, stopMetrics, merr := startMetrics(metricsAddr, cmd.ErrOrStderr())
				if merr != nil {
					stop()
					return merr
				}
				defer stopMetrics()
				meter = mp
			}
			if cl.members != "" || cl.etcd != "" {
				b, closeCluster, cerr := cl.join(meter)
				if cerr != nil {
					stop()
					return cerr
				}
				rep, err = engine.RunWith(ctx, cfg, b)
				closeCluster()
			} else {
				rep, err = runEmbedded(ctx, cfg, meter)
			}
			stop()
			if err != nil && !errors.Is(err, engine.ErrVerify) {
				if errors.Is(err, engine.ErrConfig) || errors.Is(err, engine.ErrDoesNotFit) {
					return badInput("%v", err)
				}
				return exitError{exitFailed, err}
			}
			out := runOutput{Report: rep, Snapshots: snapshots}
			if doParity {
				pc, perr := goldenParity()
				if perr != nil {
					return exitError{exitFailed, perr}
				}
				out.Parity = &pc
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if werr := enc.Encode(out); werr != nil {
					return werr
				}
			} else {
				if werr := rep.WriteText(cmd.OutOrStdout()); werr != nil {
					return werr
				}
				if out.Parity != nil {
					verdict := "ok"
					if out.Parity.Failed > 0 {
						verdict = "FAILED"
					}
					fmt.Fprintf(cmd.OutOrStdout(), "  parity        %s: %d golden-vector checks passed, %d failed (kvmesh parity)\n",
						verdict, out.Parity.Passed, out.Parity.Failed)
				}
				if len(snapshots) > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "  snapshots     %s (kvmesh inspect)\n", strings.Join(snapshots, ", "))
				}
			}
			if err != nil {
				return exitError{exitFailed, err}
			}
			if rep.PagesFreeAtEnd != rep.Pages {
				return exitError{exitFailed, fmt.Errorf("page leak: %d of %d pages free after every request finished", rep.PagesFreeAtEnd, rep.Pages)}
			}
			if out.Parity != nil && out.Parity.Failed > 0 {
				return exitError{exitFailed, fmt.Errorf("%d golden-vector parity checks failed (run kvmesh parity)", out.Parity.Failed)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configFile, "config", "", "read settings from a YAML or JSON `file` (flags given too override it)")
	f.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	f.BoolVar(&printCfg, "print-config", false, "print the settings (defaults, --config, flags) as JSON, usable as --config, and exit")
	f.StringVar(&progress, "progress", "auto", "progress on stderr: auto (a bar on a terminal, else lines), bar, lines or none")
	f.BoolVar(&doVerify, "verify", true, "re-run a sample of requests with no cache and require the same tokens")
	f.IntVar(&cfg.Verify, "verify-requests", cfg.Verify, "how many requests --verify re-runs")
	f.BoolVar(&doParity, "parity", true, "also run the golden-vector parity checks (kvmesh parity)")
	cl.register(f)
	f.StringVar(&metricsAddr, "metrics-listen", "", "serve the runtime's metrics for Prometheus on `host:port`/metrics while the run lasts")
	f.StringVar(&snapshotDir, "snapshot", "", "after the run, write each cache's final version to `dir`/<cache id>.safetensors (never overwrites)")
	f.StringVar(&fault, "fault", "", "break the cache path on purpose (recurrent-reset, kv-zero), to see --verify fail")
	_ = f.MarkHidden("fault")

	w := &cfg.Workload
	f.Uint64Var(&w.Seed, "seed", w.Seed, "workload seed")
	f.IntVar(&w.Requests, "requests", w.Requests, "requests (turns) in all")
	f.IntVar(&w.Turns, "turns", w.Turns, "most turns per conversation")
	f.IntVar(&w.SystemPrompts, "system-prompts", w.SystemPrompts, "distinct system prompts")
	f.IntVar(&w.SystemLen.Min, "system-min", w.SystemLen.Min, "shortest system prompt, tokens")
	f.IntVar(&w.SystemLen.Max, "system-max", w.SystemLen.Max, "longest system prompt, tokens")
	f.IntVar(&w.UserLen.Min, "prompt-min", w.UserLen.Min, "shortest user message, tokens")
	f.IntVar(&w.UserLen.Max, "prompt-max", w.UserLen.Max, "longest user message, tokens")
	f.IntVar(&w.OutputLen.Min, "output-min", w.OutputLen.Min, "shortest reply, tokens")
	f.IntVar(&w.OutputLen.Max, "output-max", w.OutputLen.Max, "longest reply, tokens")
	f.Float64Var(&w.ArrivalRate, "arrival-rate", w.ArrivalRate, "new conversations per step (mean)")
	f.IntVar(&w.ThinkSteps.Min, "think-min", w.ThinkSteps.Min, "fewest steps between a reply and the next turn")
	f.IntVar(&w.ThinkSteps.Max, "think-max", w.ThinkSteps.Max, "most steps between a reply and the next turn")

	s := &cfg.Scheduler
	f.IntVar(&s.Slots, "slots", s.Slots, "sequences running at once (batch rows)")
	f.IntVar(&s.TokenBudget, "token-budget", s.TokenBudget, "tokens computed per step at most (decodes, then prefill chunks)")
	f.IntVar(&s.PageSize, "page-size", s.PageSize, "tokens per page")
	f.IntVar(&s.Pages, "pages", s.Pages, "usable pages in the pool")
	f.BoolVar(&s.PrefixCaching, "prefix-caching", s.PrefixCaching, "reuse cached prefixes")
	f.TextVar(&s.Eviction, "eviction", s.Eviction, "page pool eviction policy: lru (vLLM's), shared or lineage (see kvmesh sim)")

	m := &cfg.Model
	f.Uint64Var(&m.Seed, "model-seed", m.Seed, "seed of the model's weights")
	f.Var(layersValue{&m.Layers}, "layers", "layer pattern: attention, mamba2, lightning (or a, m, l), comma-separated")
	f.IntVar(&m.Vocab, "vocab", m.Vocab, "vocabulary size")
	f.IntVar(&m.Hidden, "hidden", m.Hidden, "model width")
	f.IntVar(&m.Heads, "heads", m.Heads, "attention query heads")
	f.IntVar(&m.KVHeads, "kv-heads", m.KVHeads, "attention key/value heads")
	f.IntVar(&m.HeadDim, "head-dim", m.HeadDim, "attention head dim (even)")
	f.Float64Var(&m.RopeTheta, "rope-theta", m.RopeTheta, "rotary embedding base (0: 10000)")
	f.IntVar(&m.Mamba2Heads, "mamba2-heads", m.Mamba2Heads, "Mamba2 heads")
	f.IntVar(&m.Mamba2HeadDim, "mamba2-head-dim", m.Mamba2HeadDim, "Mamba2 head dim")
	f.IntVar(&m.Mamba2Groups, "mamba2-groups", m.Mamba2Groups, "Mamba2 groups")
	f.IntVar(&m.Mamba2State, "mamba2-state", m.Mamba2State, "Mamba2 state size")
	f.IntVar(&m.Mamba2Conv, "mamba2-conv", m.Mamba2Conv, "Mamba2 conv width")
	f.IntVar(&m.LightningHeads, "lightning-heads", m.LightningHeads, "lightning heads")
	f.IntVar(&m.LightningHeadDim, "lightning-head-dim", m.LightningHeadDim, "lightning head dim")
	f.IntVar(&m.LightningBlock, "lightning-block", m.LightningBlock, "block length of lightning's full (block-wise) path")
	return cmd
}

// loadConfig reads a YAML or JSON config file over the defaults into cfg,
// then applies again the flags given on the command line, so that they win.
// Unknown keys are errors.
func loadConfig(flags *pflag.FlagSet, file string, cfg *engine.Config) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return badInput("--config: %v", err)
	}
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return badInput("--config %s: %v", file, err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	js, err := json.Marshal(doc)
	if err != nil {
		return badInput("--config %s: %v", file, err)
	}
	fromFile := engine.DefaultConfig()
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fromFile); err != nil {
		return badInput("--config %s: %v", file, err)
	}
	given := map[*pflag.Flag]string{}
	flags.Visit(func(f *pflag.Flag) { given[f] = f.Value.String() })
	*cfg = fromFile
	for f, v := range given {
		if err := f.Value.Set(v); err != nil {
			return badInput("--%s: %v", f.Name, err)
		}
	}
	return nil
}

// startProgress reports the run's progress on w: a progress bar, or a plain
// line at most once a second and at the end. It returns the function that
// ends it.
func startProgress(cfg *engine.Config, mode string, w io.Writer) func() {
	switch mode {
	case "bar":
		bar := progressbar.NewOptions(cfg.Workload.Requests, progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("serving"), progressbar.OptionShowCount(), progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish(), progressbar.OptionShowElapsedTimeOnFinish())
		cfg.Progress = func(p engine.Progress) {
			bar.Describe(fmt.Sprintf("step %d, %d running, pages %d/%d", p.Step, p.Running, p.PagesUsed, p.Pages))
			_ = bar.Set(p.Finished)
		}
		return func() { _ = bar.Finish(); _ = bar.Exit() }
	case "lines":
		var last time.Time
		var lastP engine.Progress
		line := func(p engine.Progress) {
			fmt.Fprintf(w, "kvmesh run: step %d, %d/%d requests done, %d running, %d waiting, %d tokens out, pages %d/%d\n",
				p.Step, p.Finished, p.Requests, p.Running, p.Waiting, p.TokensOut, p.PagesUsed, p.Pages)
		}
		cfg.Progress = func(p engine.Progress) {
			lastP = p
			if now := time.Now(); now.Sub(last) >= time.Second {
				last = now
				line(p)
			}
		}
		return func() {
			if lastP.Step > 0 {
				line(lastP)
			}
		}
	}
	return func() {}
}

// prepareSnapshotDir creates dir if missing and refuses (exit 2) when a
// snapshot of one of the caches ids is there already, so that --snapshot
// fails before the run rather than after it.
func prepareSnapshotDir(dir string, ids []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return badInput("--snapshot %s: %v", dir, err)
	}
	for _, id := range ids {
		path := snapshotPath(dir, id)
		if _, err := os.Lstat(path); err == nil {
			return badInput("--snapshot %s: %s exists (kvmesh never overwrites a snapshot: remove it or choose another directory)", dir, path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return badInput("--snapshot %s: %v", dir, err)
		}
	}
	return nil
}

// snapshotPath is where --snapshot writes cache id.
func snapshotPath(dir, id string) string { return filepath.Join(dir, id+".safetensors") }

// writeSnapshot writes version v of cache id as a new file in dir (one that
// appeared since prepareSnapshotDir is not overwritten either) and returns
// its path.
func writeSnapshot(dir, id string, v actors.Version) (string, error) {
	data, err := engine.MarshalVersion(v)
	if err != nil {
		return "", err
	}
	path := snapshotPath(dir, id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(path)
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return path, nil
}

// goldenParity runs the embedded golden-vector cases (kvmesh parity's
// default run) and counts the checks.
func goldenParity() (parityCount, error) {
	var pc parityCount
	opt := parity.Options{Tol64: 1e-12, Tol32: 1e-5}
	for _, f := range parity.GoldenFiles() {
		data, err := parity.Golden(f)
		if err != nil {
			return pc, err
		}
		res, err := parity.Run(f, data, opt)
		if err != nil {
			return pc, err
		}
		for _, c := range res.Checks {
			if c.OK {
				pc.Passed++
			} else {
				pc.Failed++
			}
		}
	}
	return pc, nil
}

// runEmbedded runs cfg on a fresh embedded runtime that records its
// metrics on meter (none when nil).
func runEmbedded(ctx context.Context, cfg engine.Config, meter metric.MeterProvider) (engine.Report, error) {
	if meter == nil {
		return engine.Run(ctx, cfg)
	}
	if err := cfg.Validate(); err != nil {
		return engine.Report{}, err
	}
	rt, err := actors.NewRuntime(actors.WithMeterProvider(meter))
	if err != nil {
		return engine.Report{}, err
	}
	defer func() { _ = rt.Close() }()
	return engine.RunWith(ctx, cfg, engine.Embedded(rt))
}
