package snapshot

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Info describes one snapshot. Its JSON form is one line of
// `kvmesh inspect --json`, whose help documents every field.
type Info struct {
	// File names the snapshot; Describe leaves it empty for the caller to
	// set (kvmesh inspect puts the path as given).
	File string `json:"file"`
	// Format is the "format" metadata of the safetensors header, "" when
	// absent.
	Format string `json:"format"`
	// Kind is transformer, paged, mamba, mamba2 or lightning; "safetensors"
	// for a file that is not a kvmesh snapshot.
	Kind string `json:"kind"`
	// Object is "view" or "cache"; "" for a file that is not a kvmesh
	// snapshot.
	Object string `json:"object,omitempty"`
	// NumViews is the number of views (layers); a view snapshot has 1.
	NumViews int `json:"num_views"`
	// EmptyViews lists the positions of the empty views (EasyDeL's None, a
	// paged cache's absent layers); never nil.
	EmptyViews []int `json:"empty_views"`
	// Views describes every view in file order; never nil.
	Views []View `json:"views"`
	// Tensors lists every entry of the snapshot in name order, runs of
	// digits compared as numbers ("views.2.key" before "views.10.key");
	// never nil.
	Tensors []Tensor `json:"tensors"`
	// TensorBytes is the sum of the tensors' bytes.
	TensorBytes int64 `json:"tensor_bytes"`
	// FileBytes is the size of the whole snapshot.
	FileBytes int64 `json:"file_bytes"`
	// Note is set only for a file that is not a kvmesh snapshot, and says
	// so.
	Note string `json:"note,omitempty"`
}

// View describes one view of a snapshot. An empty view has only Position,
// Empty and a nil LayerIndex. Which of the other fields a kind sets is
// documented in `kvmesh inspect --help`; the others are zero and left out of
// the JSON.
type View struct {
	// Position is the view's index in the snapshot's view list.
	Position int `json:"position"`
	// Empty is true for an empty view.
	Empty bool `json:"empty"`
	// LayerIndex is the view's layer index, nil when it has none.
	LayerIndex *int `json:"layer_index"`
	// DType is the cache dtype: of every read, and of the scales when the
	// storage is quantized.
	DType string `json:"dtype,omitempty"`
	// BatchSize is the number of batch rows (decode slots); 0 for a
	// lightning view whose metadata and state leave it unset.
	BatchSize int `json:"batch_size,omitempty"`

	// SequenceLength is a transformer view's capacity per row.
	SequenceLength int `json:"sequence_length,omitempty"`
	// Pages is a paged view's page count per layer, the dummy page 0
	// included.
	Pages int `json:"pages,omitempty"`
	// PageSize is a paged view's tokens per page.
	PageSize int `json:"page_size,omitempty"`
	// PagesPerSequence is a paged view's page budget per sequence.
	PagesPerSequence int `json:"pages_per_sequence,omitempty"`
	// MaxSequenceLength is a paged view's tokens per sequence.
	MaxSequenceLength int `json:"max_sequence_length,omitempty"`
	// KVHeads is the number of key (and value) heads of a transformer or
	// paged view.
	KVHeads int `json:"kv_heads,omitempty"`
	// HeadDim is the key head dimension of a transformer or paged view.
	HeadDim int `json:"head_dim,omitempty"`
	// ValueHeads is a transformer view's number of value heads.
	ValueHeads int `json:"value_heads,omitempty"`
	// ValueDim is a transformer view's value head dimension.
	ValueDim int `json:"value_dim,omitempty"`
	// Quantization is the storage of a transformer or paged view: none,
	// int8 or nf4.
	Quantization string `json:"quantization,omitempty"`
	// BlockSize is the NF4 block size; 0 unless Quantization is nf4.
	BlockSize int `json:"block_size,omitempty"`
	// Index is a transformer view's write position per row (its length,
	// left padding included).
	Index []int32 `json:"index,omitempty"`
	// Starts is a transformer view's first valid position per row.
	Starts []int32 `json:"starts,omitempty"`

	// ConvStateShape is the conv state's shape of a mamba or mamba2 view.
	ConvStateShape []int `json:"conv_state_shape,omitempty"`
	// SSMStateShape is the SSM state's shape of a mamba or mamba2 view.
	SSMStateShape []int `json:"ssm_state_shape,omitempty"`
	// Positions is the conv position per row of a mamba or mamba2 view.
	Positions []int32 `json:"positions,omitempty"`
	// SeqlenOffset is a mamba2 view's seqlen offset, nil for other kinds.
	SeqlenOffset *int `json:"seqlen_offset,omitempty"`

	// Heads is a lightning view's number of heads, 0 when neither its
	// metadata nor its state gives it.
	Heads int `json:"heads,omitempty"`
	// KeyValueShape is a lightning view's key_value state shape, nil until
	// the state is written.
	KeyValueShape []int `json:"key_value_shape,omitempty"`

	// Metadata is the kind's metadata as JSON, with EasyDeL's field names.
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Tensor describes one entry of a snapshot: a tensor or an int32 array.
type Tensor struct {
	// Name is the entry's name in the safetensors header.
	Name string `json:"name"`
	// DType is the safetensors dtype: F32, BF16, F16, F64, I8, U8 or I32.
	DType string `json:"dtype"`
	// Shape is the entry's shape.
	Shape []int `json:"shape"`
	// Bytes is the entry's size in the file.
	Bytes int64 `json:"bytes"`
}

// Describe decodes data, a snapshot's bytes, and describes it; Info.File is
// left empty. It decodes a kvmesh snapshot in full with its kind's
// UnmarshalView or UnmarshalCache and lists the tensors of any other
// safetensors file kvmesh reads. Errors wrap ErrNotSafetensors,
// ErrUnknownFormat (naming the format and every known one) or ErrInvalid
// (naming the format, wrapping the kind's error).
func Describe(data []byte) (Info, error) {
	s, err := tensor.UnmarshalSnapshot(data)
	if err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrNotSafetensors, err)
	}
	info := Info{Format: s.Metadata["format"], FileBytes: int64(len(data)), EmptyViews: []int{}, Views: []View{}}
	info.Tensors, info.TensorBytes = tensorTable(s)
	k, ok := kinds[info.Format]
	if !ok {
		if strings.HasPrefix(info.Format, "kvmesh.") {
			return Info{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownFormat, info.Format, strings.Join(Formats(), ", "))
		}
		info.Kind = "safetensors"
		info.Note = "not a kvmesh snapshot (no kvmesh format in its metadata): its tensors are listed, nothing else is checked"
		return info, nil
	}
	info.Kind, info.Object = k.kind, k.object
	if info.Views, err = k.decode(data); err != nil {
		return Info{}, &invalidError{info.Format, err}
	}
	info.NumViews = len(info.Views)
	for _, v := range info.Views {
		if v.Empty {
			info.EmptyViews = append(info.EmptyViews, v.Position)
		}
	}
	return info, nil
}

// Formats returns every snapshot format Describe decodes, sorted: the view
// and cache formats of each cache kind.
func Formats() []string {
	out := make([]string, 0, len(kinds))
	for f := range kinds {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// tensorTable lists the snapshot's tensors and int32 arrays in natural name
// order, with their total bytes.
func tensorTable(s tensor.Snapshot) ([]Tensor, int64) {
	out := []Tensor{}
	var total int64
	for name, t := range s.Tensors {
		out = append(out, Tensor{name, t.DType().SafetensorsName(), t.Shape(), int64(t.NumBytes())})
	}
	for name, a := range s.Int32s {
		out = append(out, Tensor{name, "I32", []int{len(a)}, 4 * int64(len(a))})
	}
	for _, t := range out {
		total += t.Bytes
	}
	slices.SortFunc(out, func(a, b Tensor) int { return naturalCompare(a.Name, b.Name) })
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
