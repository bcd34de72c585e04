package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

func newParityCmd() *cobra.Command {
	var opt parity.Options
	cmd := &cobra.Command{
		Use:   "parity [FILE...]",
		Short: "Check the caches and reference mixers against golden vectors",
		Long: `parity runs golden-vector case files (attention_gqa, mamba1_inner, mamba1_module,
mamba2_inner, mamba2_module, lightning; schema in layers/reference/parity/golden/README.md)
through kvmesh's caches: the whole sequence, token by token, and each prefill split
followed by single-token steps (attention through both the contiguous and the paged
cache), in float64 and in float32. It prints one line per case and check with the max
abs difference against outputs_float64 and outputs_float32.

With no FILE it runs the six golden files built into the binary. It exits 1 when a
difference exceeds its tolerance and 2 when a flag or a file is bad.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !(opt.Tol64 > 0) || !(opt.Tol32 > 0) {
				return badInput("--tol64 %g and --tol32 %g must be positive", opt.Tol64, opt.Tol32)
			}
			type input struct {
				name string
				data []byte
			}
			var inputs []input
			if len(args) == 0 {
				for _, f := range parity.GoldenFiles() {
					data, err := parity.Golden(f)
					if err != nil {
						return err
					}
					inputs = append(inputs, input{f, data})
				}
			}
			for _, f := range args {
				data, err := os.ReadFile(f)
				if err != nil {
					return badInput("%v", err)
				}
				inputs = append(inputs, input{f, data})
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "file\tcase\tcheck\tmax|Δ| f64\tmax|Δ| f32\tresult")
			checks, failed := 0, 0
			for _, in := range inputs {
				res, err := parity.Run(in.name, in.data, opt)
				if err != nil {
					w.Flush()
					return badInput("%v", err)
				}
				for _, c := range res.Checks {
					verdict := "ok"
					if !c.OK {
						verdict = "FAIL"
						failed++
					}
					checks++
					fmt.Fprintf(w, "%s\t%s\t%s\t%.3e\t%.3e\t%s\n", filepath.Base(in.name), res.Case, c.Name, c.Diff64, c.Diff32, verdict)
				}
			}
			w.Flush()
			fmt.Fprintf(cmd.OutOrStdout(), "%d passed, %d failed (tolerances: %g against float64, %g against float32)\n",
				checks-failed, failed, opt.Tol64, opt.Tol32)
			if failed > 0 {
				return exitError{exitFailed, fmt.Errorf("%d of %d checks exceed their tolerance", failed, checks)}
			}
			return nil
		},
	}
	cmd.Flags().Float64Var(&opt.Tol64, "tol64", 1e-12, "max abs difference allowed against outputs_float64")
	cmd.Flags().Float64Var(&opt.Tol32, "tol32", 1e-5, "max abs difference allowed against outputs_float32")
	return cmd
}
