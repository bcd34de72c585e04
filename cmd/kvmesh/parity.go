package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

func newParityCmd() *cobra.Command {
	var opt parity.Options
	var kvName string
	cmd := &cobra.Command{
		Use:   "parity [FILE...]",
		Short: "Check the caches and reference mixers against golden vectors",
		Long: `parity runs golden-vector case files (attention_gqa, mamba1_inner, mamba1_module,
mamba2_inner, mamba2_module, lightning; schema in layers/reference/parity/golden/README.md)
through kvmesh's caches: the whole sequence, token by token, and each prefill split
followed by single-token steps (attention through both the contiguous and the paged
cache), in float64 and in float32. It prints one line per case and check with the max
abs difference against outputs_float64 and outputs_float32.

With --kv-dtype f64|f32|f16|bf16|int8|nf4 it instead runs the attention cases once,
the attention math in float64, through both caches storing keys and values in that
form (int8 and nf4: quantized, with float32 scales), and compares every output and
final cache with outputs_float64 within a tolerance suited to the storage (derived
from its per-element error bound; --tolkv overrides it), which it prints. The
recurrent cases hold no KV cache: they are listed as skipped.

With no FILE it runs the six golden files built into the binary. It exits 1 when a
difference exceeds its tolerance and 2 when a flag or a file is bad.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !(opt.Tol64 > 0) || !(opt.Tol32 > 0) {
				return badInput("--tol64 %g and --tol32 %g must be positive", opt.Tol64, opt.Tol32)
			}
			if cmd.Flags().Changed("kv-dtype") {
				kv, err := parity.ParseKVStorage(kvName)
				if err != nil {
					return badInput("--kv-dtype: %v", err)
				}
				opt.KV = kv
			}
			if opt.TolKV < 0 || opt.TolKV != opt.TolKV {
				return badInput("--tolkv %g must be positive (0: the storage's tolerance)", opt.TolKV)
			}
			if opt.TolKV != 0 && opt.KV.IsZero() {
				return badInput("--tolkv needs --kv-dtype")
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
			kvRun := !opt.KV.IsZero()
			tolKV := opt.TolKV
			if tolKV == 0 {
				tolKV = opt.KV.Tolerance
			}
			out := cmd.OutOrStdout()
			if kvRun {
				fmt.Fprintf(out, "kv storage %s: tolerance %g against outputs_float64\n", opt.KV, tolKV)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			if kvRun {
				fmt.Fprintf(w, "file\tcase\tcheck\tmax|Δ| %s\tresult\n", opt.KV.Name)
			} else {
				fmt.Fprintln(w, "file\tcase\tcheck\tmax|Δ| f64\tmax|Δ| f32\tresult")
			}
			checks, failed, skipped := 0, 0, 0
			for _, in := range inputs {
				res, err := parity.Run(in.name, in.data, opt)
				if err != nil {
					w.Flush()
					return badInput("%v", err)
				}
				if res.Skipped != "" {
					skipped++
					fmt.Fprintf(w, "%s\t%s\tskipped: %s\n", filepath.Base(in.name), res.Case, res.Skipped)
				}
				for _, c := range res.Checks {
					verdict := "ok"
					if !c.OK {
						verdict = "FAIL"
						failed++
					}
					checks++
					if kvRun {
						fmt.Fprintf(w, "%s\t%s\t%s\t%.3e\t%s\n", filepath.Base(in.name), res.Case, c.Name, c.Diff64, verdict)
					} else {
						fmt.Fprintf(w, "%s\t%s\t%s\t%.3e\t%.3e\t%s\n", filepath.Base(in.name), res.Case, c.Name, c.Diff64, c.Diff32, verdict)
					}
				}
			}
			w.Flush()
			if kvRun {
				fmt.Fprintf(out, "%d passed, %d failed, %d cases skipped (kv storage %s: tolerance %g against float64)\n",
					checks-failed, failed, skipped, opt.KV.Name, tolKV)
			} else {
				fmt.Fprintf(out, "%d passed, %d failed (tolerances: %g against float64, %g against float32)\n",
					checks-failed, failed, opt.Tol64, opt.Tol32)
			}
			if failed > 0 {
				return exitError{exitFailed, fmt.Errorf("%d of %d checks exceed their tolerance", failed, checks)}
			}
			return nil
		},
	}
	cmd.Flags().Float64Var(&opt.Tol64, "tol64", 1e-12, "max abs difference allowed against outputs_float64")
	cmd.Flags().Float64Var(&opt.Tol32, "tol32", 1e-5, "max abs difference allowed against outputs_float32")
	cmd.Flags().StringVar(&kvName, "kv-dtype", "", "run the attention cases through caches storing K/V as "+strings.Join(parity.KVStorageNames(), "|")+" (default: the float64 and float32 runs)")
	cmd.Flags().Float64Var(&opt.TolKV, "tolkv", 0, "max abs difference allowed in a --kv-dtype run (0: the storage's own tolerance)")
	return cmd
}
