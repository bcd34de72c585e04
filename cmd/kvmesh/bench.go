package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/actors/engine/budget"
)

func newBenchCmd() *cobra.Command {
	var benchTime string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the performance budgets of DESIGN.md section 7 and say whether each holds",
		Long: `bench measures each budget of DESIGN.md section 7 in-process (testing.Benchmark on
kvmesh's public APIs, both sides of every ratio in the same run) and prints the
measurements, the ratio or rate, the limit and pass or FAIL:

  decode write at 32k context vs 128 (contiguous View.Append, paged WriteDecodes)
  prefill write vs copy() of the same bytes
  page pool alloc+free pairs per second
  a 32-layer, batch-64 decode step through the actors vs plain goroutines
  KV transfer between two nodes (not measurable yet: it needs the cluster)

It takes about half a minute at the default --benchtime and exits 1 if a budget
fails (timings on a busy machine vary: run it again before drawing conclusions),
2 on a bad flag.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			progress := func(name string) { fmt.Fprintf(cmd.ErrOrStderr(), "kvmesh bench: %s\n", name) }
			results, err := budget.Measure(budget.Options{BenchTime: benchTime, Progress: progress})
			if errors.Is(err, budget.ErrBenchTime) {
				return badInput("--benchtime: %v", err)
			}
			if err != nil {
				return exitError{exitFailed, err}
			}
			out := cmd.OutOrStdout()
			failed := 0
			for _, r := range results {
				if r.NA == "" && !r.Pass {
					failed++
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			} else {
				w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "budget\tmeasured\tvalue\tlimit\tresult")
				for _, r := range results {
					if r.NA != "" {
						fmt.Fprintf(w, "%s\t%s\t\t%s\t\n", r.Name, r.NA, r.Limit)
						continue
					}
					verdict := "pass"
					if !r.Pass {
						verdict = "FAIL"
					}
					value := fmt.Sprintf("%.2f", r.Value)
					if r.Value >= 1e6 {
						value = fmt.Sprintf("%.0fM", r.Value/1e6)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Measured, value, r.Limit, verdict)
				}
				w.Flush()
			}
			if failed > 0 {
				return exitError{exitFailed, fmt.Errorf("%d budgets fail", failed)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&benchTime, "benchtime", "300ms", "time (e.g. 300ms) or iterations (e.g. 50x) per benchmark, as go test's -benchtime")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the results as a JSON array")
	return cmd
}
