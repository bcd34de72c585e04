package snapshot

import (
	"encoding/json"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// kindDecoder decodes the snapshots of one format.
type kindDecoder struct {
	kind, object string
	decode       func(data []byte) ([]View, error)
}

// kinds maps every kvmesh snapshot format to its decoder.
var kinds = map[string]kindDecoder{
	transformer.ViewSnapshotFormat: {"transformer", "view", func(b []byte) ([]View, error) {
		return oneView(transformer.UnmarshalView(b))(transformerView)
	}},
	transformer.CacheSnapshotFormat: {"transformer", "cache", func(b []byte) ([]View, error) {
		c, err := transformer.UnmarshalCache(b)
		return cacheViews(c, err, transformer.View.IsEmpty, transformerView)
	}},
	paged.ViewSnapshotFormat: {"paged", "view", func(b []byte) ([]View, error) {
		return oneView(paged.UnmarshalView(b))(pagedView)
	}},
	paged.CacheSnapshotFormat: {"paged", "cache", func(b []byte) ([]View, error) {
		c, err := paged.UnmarshalCache(b)
		return cacheViews(c, err, paged.View.IsZero, pagedView)
	}},
	mamba.ViewSnapshotFormat: {"mamba", "view", func(b []byte) ([]View, error) {
		return oneView(mamba.UnmarshalView(b))(mambaView)
	}},
	mamba.CacheSnapshotFormat: {"mamba", "cache", func(b []byte) ([]View, error) {
		c, err := mamba.UnmarshalCache(b)
		return cacheViews(c, err, mamba.View.IsEmpty, mambaView)
	}},
	mamba2.ViewSnapshotFormat: {"mamba2", "view", func(b []byte) ([]View, error) {
		return oneView(mamba2.UnmarshalView(b))(mamba2View)
	}},
	mamba2.CacheSnapshotFormat: {"mamba2", "cache", func(b []byte) ([]View, error) {
		c, err := mamba2.UnmarshalCache(b)
		return cacheViews(c, err, mamba2.View.IsEmpty, mamba2View)
	}},
	lightning.ViewSnapshotFormat: {"lightning", "view", func(b []byte) ([]View, error) {
		return oneView(lightning.UnmarshalView(b))(lightningView)
	}},
	lightning.CacheSnapshotFormat: {"lightning", "cache", func(b []byte) ([]View, error) {
		c, err := lightning.UnmarshalCache(b)
		return cacheViews(c, err, lightning.View.IsEmpty, lightningView)
	}},
}

// oneView describes the single view of a view snapshot.
func oneView[V any](v V, err error) func(describe func(V) View) ([]View, error) {
	return func(describe func(V) View) ([]View, error) {
		if err != nil {
			return nil, err
		}
		return []View{describe(v)}, nil
	}
}

// viewList is what cacheViews needs of a kind's Cache.
type viewList[V any] interface {
	Len() int
	View(i int) (V, error)
}

// cacheViews describes every view of a decoded cache.
func cacheViews[V any, C viewList[V]](c C, err error, empty func(V) bool, describe func(V) View) ([]View, error) {
	if err != nil {
		return nil, err
	}
	out := make([]View, c.Len())
	for i := range out {
		v, err := c.View(i)
		if err != nil {
			return nil, err
		}
		if empty(v) {
			out[i] = View{Empty: true}
		} else {
			out[i] = describe(v)
		}
		out[i].Position = i
	}
	return out, nil
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

func transformerView(v transformer.View) View {
	m, st := v.Metadata(), v.Storage()
	vi := View{LayerIndex: layerOf(v.LayerIndex()), DType: st.DType.String(), BatchSize: m.BatchSize,
		SequenceLength: m.SequenceLength, KVHeads: m.KeyHeads, HeadDim: m.KeyDim, ValueHeads: m.ValueHeads, ValueDim: m.ValueDim,
		Quantization: quantName(st.Quantization), Index: v.Index(), Starts: v.Starts(), Metadata: metadataJSON(m)}
	if st.Quantization == tensor.NF4 {
		vi.BlockSize = st.BlockSize
	}
	return vi
}

func pagedView(v paged.View) View {
	m, st := v.Metadata(), v.Storage()
	vi := View{LayerIndex: layerOf(v.LayerIndex(), true), DType: st.DType.String(), BatchSize: m.BatchSize,
		Pages: m.NumPagesPerLayer, PageSize: m.PageSize, PagesPerSequence: m.NumPagesPerSequence, MaxSequenceLength: m.MaxSequences,
		KVHeads: m.NumKVHeads, HeadDim: m.KVHeadDimSize, Quantization: quantName(st.Quantization), Metadata: metadataJSON(m)}
	if st.Quantization == tensor.NF4 {
		vi.BlockSize = st.BlockSize
	}
	return vi
}

func mambaView(v mamba.View) View {
	m := v.Metadata()
	return View{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: m.BatchSize,
		ConvStateShape: v.ConvStates().Shape(), SSMStateShape: v.SSMStates().Shape(), Positions: v.Positions(), Metadata: metadataJSON(m)}
}

func mamba2View(v mamba2.View) View {
	m := v.Metadata()
	off := v.SeqlenOffset()
	return View{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: m.BatchSize,
		ConvStateShape: v.ConvStates().Shape(), SSMStateShape: v.SSMStates().Shape(), Positions: v.Positions(), SeqlenOffset: &off,
		Metadata: metadataJSON(m)}
}

func lightningView(v lightning.View) View {
	m := v.Metadata()
	shape := m.StateShape()
	vi := View{LayerIndex: layerOf(v.LayerIndex()), DType: v.DType().String(), BatchSize: shape[0], Heads: shape[1],
		Metadata: metadataJSON(m)}
	if v.HasKeyValue() {
		vi.KeyValueShape = v.KeyValue().Shape()
		vi.BatchSize, vi.Heads = vi.KeyValueShape[0], vi.KeyValueShape[1]
	}
	return vi
}
