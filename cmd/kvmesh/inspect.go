package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/layers/snapshot"
)

func newInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect FILE...",
		Short: "Validate cache snapshots and summarize them (kind, views, metadata, tensors)",
		Long: `inspect reads snapshot files (View.MarshalBinary and Cache.MarshalBinary of every
cache kind, and what kvmesh run --snapshot writes), decodes each one in full with its
kind's UnmarshalView or UnmarshalCache, so a file that passes is one the kind accepts
whole, and prints for each: its format, kind, whether it is a view or a cache, its
views (empty ones noted) with the metadata that matters for the kind, and a table of
its tensors (name, dtype, shape, bytes) with their total.

A snapshot names its kind in the "format" entry of its safetensors metadata:
kvmesh.transformer.{View,Cache}/v1, kvmesh.paged.{view,cache}/v1,
kvmesh.mamba.{View,Cache}/v1, kvmesh.mamba2.{View,Cache}/v1 and
kvmesh.lightning.{View,Cache}/v1 (quantized int8 and NF4 transformer and paged
storage included). A valid safetensors file whose format is absent or does not begin
with "kvmesh." (e.g. Hugging Face's "pt") is not a kvmesh snapshot: inspect says so,
lists its tensors and checks nothing more, which is not an error; it must still be a
safetensors file kvmesh reads (every entry of dtype F32, BF16, F16, F64, I8, U8 or I32).

--json prints one JSON object per file, one per line, in the order of the arguments:
  file           the path as given
  format         the "format" metadata ("" when absent)
  kind           transformer, paged, mamba, mamba2 or lightning; "safetensors" for a
                 file that is not a kvmesh snapshot
  object         "view" or "cache" (absent for a plain safetensors file)
  num_views      the number of views (layers); a view snapshot has 1
  empty_views    positions of the empty views (EasyDeL's None; a paged cache's
                 absent layers)
  views          one object per view:
    position       index in the file's view list
    empty          true for an empty view, which has only position and layer_index
    layer_index    the view's layer index, null when it has none
    dtype          the cache dtype (of every read; of the scales when quantized)
    batch_size     batch rows (decode slots)
    metadata       the kind's metadata as JSON, EasyDeL's field names
    transformer: sequence_length, kv_heads, head_dim, value_heads, value_dim,
                 quantization (none, int8, nf4), block_size (nf4), index (each
                 row's write position: its length, left padding included), starts
    paged:       pages (per layer, the dummy page 0 included), page_size,
                 pages_per_sequence, max_sequence_length, kv_heads, head_dim,
                 quantization, block_size
    mamba:       conv_state_shape, ssm_state_shape, positions
    mamba2:      the same and seqlen_offset
    lightning:   heads, key_value_shape (absent until the state is written);
                 batch_size and heads are absent when neither the metadata nor a
                 state gives them
  tensors        every entry: name, dtype (safetensors: F32, BF16, F16, F64, I8, U8,
                 I32), shape, bytes; in name order with numbers compared as numbers
  tensor_bytes   the sum of the tensors' bytes
  file_bytes     the file's size
  note           only for a file that is not a kvmesh snapshot
A file that cannot be inspected gives {"file": ..., "error": ...} instead.

Every file is inspected even when one fails. Exit codes: 0 when every file was
inspected; 2 when a file cannot be read, is not a valid safetensors file, names an
unknown kvmesh format, or does not decode as the kind it names (truncated, corrupt,
inconsistent); each error names its file.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var errs []error
			for i, name := range args {
				info, err := inspectFile(name)
				if err != nil {
					errs = append(errs, err)
					if asJSON {
						if werr := writeJSONLine(out, fileError{File: name, Error: err.Error()}); werr != nil {
							return werr
						}
					}
					continue
				}
				var werr error
				if asJSON {
					werr = writeJSONLine(out, info)
				} else {
					if i > 0 {
						fmt.Fprintln(out)
					}
					werr = info.WriteText(out)
				}
				if werr != nil {
					return werr
				}
			}
			if len(errs) > 0 {
				return exitError{exitBadInput, errors.Join(errs...)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per file, one per line (fields in --help)")
	return cmd
}

// fileError is the --json form of a file that cannot be inspected.
type fileError struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// inspectFile reads and describes one file; its errors name the file.
func inspectFile(name string) (snapshot.Info, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return snapshot.Info{}, fmt.Errorf("%s: cannot read: %w", name, err)
	}
	info, err := snapshot.Describe(data)
	if err != nil {
		return snapshot.Info{}, fmt.Errorf("%s: %w", name, err)
	}
	info.File = name
	return info, nil
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
