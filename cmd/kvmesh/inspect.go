package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
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
					werr = info.writeText(out)
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

// fileInfo is what inspect reports of one file; its JSON form is the --json
// output, whose field names are documented in the command's help.
type fileInfo struct {
	File        string       `json:"file"`
	Format      string       `json:"format"`
	Kind        string       `json:"kind"`
	Object      string       `json:"object,omitempty"`
	NumViews    int          `json:"num_views"`
	EmptyViews  []int        `json:"empty_views"`
	Views       []viewInfo   `json:"views"`
	Tensors     []tensorInfo `json:"tensors"`
	TensorBytes int64        `json:"tensor_bytes"`
	FileBytes   int64        `json:"file_bytes"`
	Note        string       `json:"note,omitempty"`
}

// fileError is the --json form of a file that cannot be inspected.
type fileError struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// viewInfo describes one view. Which fields a kind sets is listed in the
// command's help; the others are left out of the JSON.
type viewInfo struct {
	Position   int    `json:"position"`
	Empty      bool   `json:"empty"`
	LayerIndex *int   `json:"layer_index"`
	DType      string `json:"dtype,omitempty"`
	BatchSize  int    `json:"batch_size,omitempty"`

	SequenceLength    int     `json:"sequence_length,omitempty"`
	Pages             int     `json:"pages,omitempty"`
	PageSize          int     `json:"page_size,omitempty"`
	PagesPerSequence  int     `json:"pages_per_sequence,omitempty"`
	MaxSequenceLength int     `json:"max_sequence_length,omitempty"`
	KVHeads           int     `json:"kv_heads,omitempty"`
	HeadDim           int     `json:"head_dim,omitempty"`
	ValueHeads        int     `json:"value_heads,omitempty"`
	ValueDim          int     `json:"value_dim,omitempty"`
	Quantization      string  `json:"quantization,omitempty"`
	BlockSize         int     `json:"block_size,omitempty"`
	Index             []int32 `json:"index,omitempty"`
	Starts            []int32 `json:"starts,omitempty"`

	ConvStateShape []int   `json:"conv_state_shape,omitempty"`
	SSMStateShape  []int   `json:"ssm_state_shape,omitempty"`
	Positions      []int32 `json:"positions,omitempty"`
	SeqlenOffset   *int    `json:"seqlen_offset,omitempty"`

	Heads         int   `json:"heads,omitempty"`
	KeyValueShape []int `json:"key_value_shape,omitempty"`

	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// tensorInfo is one entry of a snapshot.
type tensorInfo struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	Bytes int64  `json:"bytes"`
}

// snapshotKind decodes the snapshots of one format.
type snapshotKind struct {
	kind, object string
	decode       func(data []byte) ([]viewInfo, error)
}

// snapshotKinds maps every kvmesh snapshot format to its decoder.
var snapshotKinds = map[string]snapshotKind{
	transformer.ViewSnapshotFormat: {"transformer", "view", func(b []byte) ([]viewInfo, error) {
		return oneView(transformer.UnmarshalView(b))(transformerView)
	}},
	transformer.CacheSnapshotFormat: {"transformer", "cache", func(b []byte) ([]viewInfo, error) {
		c, err := transformer.UnmarshalCache(b)
		return cacheViews(c, err, transformer.View.IsEmpty, transformerView)
	}},
	paged.ViewSnapshotFormat: {"paged", "view", func(b []byte) ([]viewInfo, error) {
		return oneView(paged.UnmarshalView(b))(pagedView)
	}},
	paged.CacheSnapshotFormat: {"paged", "cache", func(b []byte) ([]viewInfo, error) {
		c, err := paged.UnmarshalCache(b)
		return cacheViews(c, err, paged.View.IsZero, pagedView)
	}},
	mamba.ViewSnapshotFormat: {"mamba", "view", func(b []byte) ([]viewInfo, error) {
		return oneView(mamba.UnmarshalView(b))(mambaView)
	}},
	mamba.CacheSnapshotFormat: {"mamba", "cache", func(b []byte) ([]viewInfo, error) {
		c, err := mamba.UnmarshalCache(b)
		return cacheViews(c, err, mamba.View.IsEmpty, mambaView)
	}},
	mamba2.ViewSnapshotFormat: {"mamba2", "view", func(b []byte) ([]viewInfo, error) {
		return oneView(mamba2.UnmarshalView(b))(mamba2View)
	}},
	mamba2.CacheSnapshotFormat: {"mamba2", "cache", func(b []byte) ([]viewInfo, error) {
		c, err := mamba2.UnmarshalCache(b)
		return cacheViews(c, err, mamba2.View.IsEmpty, mamba2View)
	}},
	lightning.ViewSnapshotFormat: {"lightning", "view", func(b []byte) ([]viewInfo, error) {
		return oneView(lightning.UnmarshalView(b))(lightningView)
	}},
	lightning.CacheSnapshotFormat: {"lightning", "cache", func(b []byte) ([]viewInfo, error) {
		c, err := lightning.UnmarshalCache(b)
		return cacheViews(c, err, lightning.View.IsEmpty, lightningView)
	}},
}

// oneView describes the single view of a view snapshot.
func oneView[V any](v V, err error) func(describe func(V) viewInfo) ([]viewInfo, error) {
	return func(describe func(V) viewInfo) ([]viewInfo, error) {
		if err != nil {
			return nil, err
		}
		return []viewInfo{describe(v)}, nil
	}
}

// viewList is what cacheViews needs of a kind's Cache.
type viewList[V any] interface {
	Len() int
	View(i int) (V, error)
}

// cacheViews describes every view of a decoded cache.
func cacheViews[V any, C viewList[V]](c C, err error, empty func(V) bool, describe func(V) viewInfo) ([]viewInfo, error) {
	if err != nil {
		return nil, err
	}
	out := make([]viewInfo, c.Len())
	for i := range out {
		v, err := c.View(i)
		if err != nil {
			return nil, err
		}
		if empty(v) {
			out[i] = viewInfo{Empty: true}
		} else {
			out[i] = describe(v)
		}
		out[i].Position = i
	}
	return out, nil
}

// inspectFile reads and describes one file; its errors name the file.
func inspectFile(name string) (fileInfo, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fileInfo{}, fmt.Errorf("%s: cannot read: %w", name, err)
	}
	return describeSnapshot(name, data)
}

// describeSnapshot decodes data, the contents of file name, and describes
// it; its errors name the file.
func describeSnapshot(name string, data []byte) (fileInfo, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return fileInfo{}, fmt.Errorf("%s: not a valid safetensors snapshot: %w", name, err)
	}
	info := fileInfo{File: name, Format: s.Metadata["format"], FileBytes: int64(len(data)), EmptyViews: []int{}, Views: []viewInfo{}}
	info.Tensors, info.TensorBytes = tensorTable(s)
	k, ok := snapshotKinds[info.Format]
	if !ok {
		if strings.HasPrefix(info.Format, "kvmesh.") {
			return fileInfo{}, fmt.Errorf("%s: unknown snapshot format %q (known: %s)", name, info.Format, strings.Join(knownFormats(), ", "))
		}
		info.Kind = "safetensors"
		info.Note = "not a kvmesh snapshot (no kvmesh format in its metadata): its tensors are listed, nothing else is checked"
		return info, nil
	}
	info.Kind, info.Object = k.kind, k.object
	if info.Views, err = k.decode(data); err != nil {
		return fileInfo{}, fmt.Errorf("%s: invalid %s snapshot: %w", name, info.Format, err)
	}
	info.NumViews = len(info.Views)
	for _, v := range info.Views {
		if v.Empty {
			info.EmptyViews = append(info.EmptyViews, v.Position)
		}
	}
	return info, nil
}

// knownFormats returns the formats inspect decodes, sorted.
func knownFormats() []string {
	out := make([]string, 0, len(snapshotKinds))
	for f := range snapshotKinds {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// tensorTable lists the snapshot's tensors and int32 arrays in natural name
// order, with their total bytes.
func tensorTable(s tensor.Snapshot) ([]tensorInfo, int64) {
	var out []tensorInfo
	var total int64
	for name, t := range s.Tensors {
		out = append(out, tensorInfo{name, t.DType().SafetensorsName(), t.Shape(), int64(t.NumBytes())})
	}
	for name, a := range s.Int32s {
		out = append(out, tensorInfo{name, "I32", []int{len(a)}, 4 * int64(len(a))})
	}
	for _, t := range out {
		total += t.Bytes
	}
	slices.SortFunc(out, func(a, b tensorInfo) int { return naturalCompare(a.Name, b.Name) })
	if out == nil {
		out = []tensorInfo{}
	}
	return out, total
}

// naturalCompare orders strings with their runs of digits compared as
// numbers, so "views.2.key" sorts before "views.10.key".
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digitRun(a), digitRun(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := len(na) - len(nb); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

// digitRun returns the length of s's leading run of ASCII digits.
func digitRun(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// quantName names a quantization as kvmesh's flags do.
func quantName(q tensor.Quantization) string {
	switch q {
	case tensor.None:
		return "none"
	case tensor.Int8:
		return "int8"
	case tensor.NF4:
		return "nf4"
	}
	return q.String()
}

// metadataJSON is meta as JSON (nil if it cannot be encoded, which the
// kinds' metadata always can).
func metadataJSON(meta any) json.RawMessage {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil
	}
	return b
}

// layerOf turns a kind's (layer, ok) into a pointer.
func layerOf(layer int, ok bool) *int {
	if !ok {
		return nil
	}
	return &layer
}

func transformerView(v transformer.View) viewInfo {
	m, st := v.Metadata(), v.Storage()
	vi := viewInfo{LayerIndex: layerOf(v.LayerIndex()), DType: st.DType.String(), BatchSize: m.BatchSize,
		SequenceLength: m.SequenceLength, KVHeads: m.KeyHeads, HeadDim: m.KeyDim, ValueHeads: m.ValueHeads, ValueDim: m.ValueDim,
		Quantization: quantName(st.Quantization), Index: v.Index(), Starts: v.Starts(), Metadata: metadataJSON(m)}
	if st.Quantization == tensor.NF4 {
		vi.BlockSize = st.BlockSize
	}
	return vi
}

func pagedView(v paged.View) viewInfo {
	m, st := v.Metadata(), v.Storage()
	vi := viewInfo{LayerIndex: layerOf(v.LayerIndex(), true), DType: st.DType.String(), BatchSize: m.BatchSize,
		Pages: m.NumPagesPerLayer, PageSize: m.PageSize, PagesPerSequence: m.NumPagesPerSequence, MaxSequenceLength: m.MaxSequences,
		KVHeads: m.NumKVHeads, HeadDim: m.KVHeadDimSize, Quantization: quantName(st.Quantization), Metadata: metadataJSON(m)}
	if st.Quantization == tensor.NF4 {
		vi.BlockSize = st.BlockSize
	}
	return vi
}

func mambaView(v mamba.View) viewInfo {
	m := v.Metadata()
	return viewInfo{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: m.BatchSize,
		ConvStateShape: v.ConvStates().Shape(), SSMStateShape: v.SSMStates().Shape(), Positions: v.Positions(), Metadata: metadataJSON(m)}
}

func mamba2View(v mamba2.View) viewInfo {
	m := v.Metadata()
	off := v.SeqlenOffset()
	return viewInfo{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: m.BatchSize,
		ConvStateShape: v.ConvStates().Shape(), SSMStateShape: v.SSMStates().Shape(), Positions: v.Positions(), SeqlenOffset: &off,
		Metadata: metadataJSON(m)}
}

func lightningView(v lightning.View) viewInfo {
	m := v.Metadata()
	shape := m.StateShape()
	vi := viewInfo{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: shape[0], Heads: shape[1],
		Metadata: metadataJSON(m)}
	if v.HasKeyValue() {
		vi.KeyValueShape = v.KeyValue().Shape()
		vi.BatchSize, vi.Heads = vi.KeyValueShape[0], vi.KeyValueShape[1]
	}
	return vi
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

// writeText prints the file's summary for a reader.
func (f fileInfo) writeText(w io.Writer) error {
	fmt.Fprintln(w, f.File)
	if f.Note != "" {
		format := "no format"
		if f.Format != "" {
			format = fmt.Sprintf("format %q", f.Format)
		}
		fmt.Fprintf(w, "  %s: %s\n", format, f.Note)
	} else {
		fmt.Fprintf(w, "  format   %s (%s %s)\n", f.Format, f.Kind, f.Object)
		views := fmt.Sprintf("%d", f.NumViews)
		switch {
		case f.Object == "view":
			views = "1 (a single view)"
		case len(f.EmptyViews) > 0:
			views += fmt.Sprintf(", %d empty: %s", len(f.EmptyViews), joinInts(f.EmptyViews))
		default:
			views += ", none empty"
		}
		fmt.Fprintf(w, "  views    %s\n", views)
		for _, v := range f.Views {
			fmt.Fprintf(w, "  view %d   %s\n", v.Position, v.describe(f.Kind))
		}
	}
	fmt.Fprintf(w, "  tensors  %d, %d bytes (file %d bytes)\n", len(f.Tensors), f.TensorBytes, f.FileBytes)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    name\tdtype\tshape\tbytes")
	for _, t := range f.Tensors {
		fmt.Fprintf(tw, "    %s\t%s\t%v\t%d\n", t.Name, t.DType, t.Shape, t.Bytes)
	}
	fmt.Fprintf(tw, "    total\t\t\t%d\n", f.TensorBytes)
	return tw.Flush()
}

// describe is the one-line text form of a view of the given kind.
func (v viewInfo) describe(kind string) string {
	if v.Empty {
		return "empty"
	}
	var b strings.Builder
	if v.LayerIndex != nil {
		fmt.Fprintf(&b, "layer %d: ", *v.LayerIndex)
	} else {
		b.WriteString("no layer index: ")
	}
	storage := v.DType
	if v.Quantization != "" && v.Quantization != "none" {
		storage = fmt.Sprintf("%s stored %s", v.DType, v.Quantization)
		if v.BlockSize > 0 {
			storage += fmt.Sprintf(" (block %d)", v.BlockSize)
		}
	}
	switch kind {
	case "transformer":
		fmt.Fprintf(&b, "batch %d, sequence length %d, %d kv heads, head dim %d", v.BatchSize, v.SequenceLength, v.KVHeads, v.HeadDim)
		if v.ValueHeads != v.KVHeads || v.ValueDim != v.HeadDim {
			fmt.Fprintf(&b, " (values: %d heads, dim %d)", v.ValueHeads, v.ValueDim)
		}
		fmt.Fprintf(&b, ", %s; index %s, starts %s", storage, shortList(v.Index), shortList(v.Starts))
	case "paged":
		fmt.Fprintf(&b, "%d pages of %d tokens (page 0 the dummy), %d kv heads, head dim %d, %s; batch %d, %d pages per sequence (%d tokens)",
			v.Pages, v.PageSize, v.KVHeads, v.HeadDim, storage, v.BatchSize, v.PagesPerSequence, v.MaxSequenceLength)
	case "mamba", "mamba2":
		fmt.Fprintf(&b, "batch %d, %s, conv state %v, ssm state %v, positions %s", v.BatchSize, storage, v.ConvStateShape,
			v.SSMStateShape, shortList(v.Positions))
		if v.SeqlenOffset != nil {
			fmt.Fprintf(&b, ", seqlen offset %d", *v.SeqlenOffset)
		}
	case "lightning":
		fmt.Fprintf(&b, "batch %s, %s heads, %s, ", sizeOrUnset(v.BatchSize), sizeOrUnset(v.Heads), storage)
		if v.KeyValueShape != nil {
			fmt.Fprintf(&b, "key_value %v", v.KeyValueShape)
		} else {
			b.WriteString("key_value not written yet")
		}
	}
	return b.String()
}

// sizeOrUnset prints a size, or "unset" for 0 (a lightning size the
// metadata leaves as None).
func sizeOrUnset(n int) string {
	if n == 0 {
		return "unset"
	}
	return strconv.Itoa(n)
}

// shortList prints at most 16 values of xs, and how many there are when it
// leaves some out.
func shortList(xs []int32) string {
	const most = 16
	parts := make([]string, 0, min(len(xs), most))
	for _, x := range xs[:min(len(xs), most)] {
		parts = append(parts, strconv.Itoa(int(x)))
	}
	if len(xs) > most {
		return fmt.Sprintf("[%s ...] (%d rows)", strings.Join(parts, " "), len(xs))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// joinInts prints xs separated by commas.
func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ", ")
}
