package snapshot

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteText writes the summary of the snapshot for a reader: File on a line
// of its own (when set), then its format and kind, its views one per line
// (empty ones noted) and a table of its tensors with their total. The labels
// of the summary lines share one column, as wide as the widest view label
// needs, so the rows line up for any number of views. It returns the
// error of writing to w.
func (f Info) WriteText(w io.Writer) error {
	var b bytes.Buffer
	if f.File != "" {
		fmt.Fprintln(&b, f.File)
	}
	width := len("tensors")
	for _, v := range f.Views {
		width = max(width, len(viewLabel(v.Position)))
	}
	width += 2
	line := func(label, format string, args ...any) {
		fmt.Fprintf(&b, "  %-*s%s\n", width, label, fmt.Sprintf(format, args...))
	}
	if f.Note != "" {
		format := "no format"
		if f.Format != "" {
			format = fmt.Sprintf("format %q", f.Format)
		}
		fmt.Fprintf(&b, "  %s: %s\n", format, f.Note)
	} else {
		line("format", "%s (%s %s)", f.Format, f.Kind, f.Object)
		views := strconv.Itoa(f.NumViews)
		switch {
		case f.Object == "view":
			views = "1 (a single view)"
		case len(f.EmptyViews) > 0:
			views += fmt.Sprintf(", %d empty: %s", len(f.EmptyViews), joinInts(f.EmptyViews))
		default:
			views += ", none empty"
		}
		line("views", "%s", views)
		for _, v := range f.Views {
			line(viewLabel(v.Position), "%s", v.describe(f.Kind))
		}
	}
	line("tensors", "%d, %d bytes (file %d bytes)", len(f.Tensors), f.TensorBytes, f.FileBytes)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    name\tdtype\tshape\tbytes")
	for _, t := range f.Tensors {
		fmt.Fprintf(tw, "    %s\t%s\t%v\t%d\n", t.Name, t.DType, t.Shape, t.Bytes)
	}
	fmt.Fprintf(tw, "    total\t\t\t%d\n", f.TensorBytes)
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}

// viewLabel is the label of the view at position i.
func viewLabel(i int) string { return "view " + strconv.Itoa(i) }

// describe is the one-line text form of a view of the given kind.
func (v View) describe(kind string) string {
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
