package reference

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// HybridMetadata is the metadata of the three caches a Hybrid model runs
// on; a kind the model does not use is nil.
type HybridMetadata struct {
	// Paged is the paged KV cache of the attention layers.
	Paged *paged.Metadata
	// Mamba2 is the conv and SSM state cache of the Mamba2 layers.
	Mamba2 *mamba2.Metadata
	// Lightning is the key_value state cache of the lightning layers, and
	// LightningLayers their number (lightning metadata has no layer count).
	Lightning       *lightning.Metadata
	LightningLayers int
}

// CacheMetadata returns the metadata of the caches m needs for slots
// concurrent sequences (batch rows) of at most maxLen tokens, with a pool
// of numPages pages (page 0, the reserved dummy page, included) of pageSize
// tokens per attention layer. The paged metadata is given directly rather
// than derived from a memory budget (paged.NewMetadata): the pool size is
// the caller's choice.
func (m *Hybrid) CacheMetadata(slots, numPages, pageSize, maxLen int) (HybridMetadata, error) {
	var hm HybridMetadata
	if slots <= 0 || numPages < 2 || pageSize <= 0 || maxLen <= 0 {
		return hm, fmt.Errorf("%w: %d slots, %d pages of %d tokens, max length %d (want slots, page size and length positive, at least 2 pages)",
			ErrInput, slots, numPages, pageSize, maxLen)
	}
	if n := m.cfg.Count(LayerAttention); n > 0 {
		pm := paged.Metadata{BatchSize: slots, NumHiddenLayers: n, NumPagesPerLayer: numPages,
			NumPagesPerSequence: (maxLen + pageSize - 1) / pageSize, MaxSequences: maxLen, PageSize: pageSize,
			NumKVHeads: m.cfg.KVHeads, KVHeadDimSize: m.cfg.HeadDim, HBMUtilization: 0.9}
		if err := pm.Validate(); err != nil {
			return hm, err
		}
		hm.Paged = &pm
	}
	if n := m.cfg.Count(LayerMamba2); n > 0 {
		c := m.cfg
		mm, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: n, BatchSize: slots,
			IntermediateSize: c.Mamba2Heads * c.Mamba2HeadDim, NumHeads: c.Mamba2Heads, HeadDim: c.Mamba2HeadDim,
			StateSize: c.Mamba2State, ConvKernelSize: c.Mamba2Conv, NGroups: c.Mamba2Groups})
		if err != nil {
			return hm, err
		}
		hm.Mamba2 = &mm
	}
	if n := m.cfg.Count(LayerLightning); n > 0 {
		b, h, dh := slots, m.cfg.LightningHeads, m.cfg.LightningHeadDim
		lm, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &b, NumHeads: &h, HeadDim: &dh})
		if err != nil {
			return hm, err
		}
		hm.Lightning, hm.LightningLayers = &lm, n
	}
	return hm, nil
}

// HybridCaches holds a Hybrid model's caches as plain values and
// implements StepIO on them, with no runtime: each write replaces the
// field's cache with the written one (the cache values themselves are
// immutable, so a copy of a HybridCaches taken before a step keeps the old
// version). It is what tests and single-process callers drive Step with.
type HybridCaches struct {
	Paged     paged.Cache
	Mamba2    mamba2.Cache
	Lightning lightning.Cache
}

// NewHybridCaches returns zero float64 caches sized by meta.
func NewHybridCaches(meta HybridMetadata) (*HybridCaches, error) {
	c := &HybridCaches{}
	var err error
	if meta.Paged != nil {
		if c.Paged, err = paged.Init(*meta.Paged, tensor.Float64); err != nil {
			return nil, err
		}
	}
	if meta.Mamba2 != nil {
		if c.Mamba2, err = mamba2.Init(*meta.Mamba2, tensor.Float64); err != nil {
			return nil, err
		}
	}
	if meta.Lightning != nil {
		if c.Lightning, err = lightning.Init(meta.LightningLayers, *meta.Lightning, tensor.Float64); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// WritePaged applies w to paged layer layer.
func (c *HybridCaches) WritePaged(layer int, w PagedKV) (paged.View, error) {
	v, err := c.Paged.View(layer)
	if err != nil {
		return v, err
	}
	if v, err = ApplyPagedKV(v, w); err != nil {
		return v, err
	}
	c.Paged, err = c.Paged.WithView(layer, v)
	return v, err
}

// ApplyPagedKV applies w to v: its prefill part (WritePrefill), then its
// decode part (WriteDecodes).
func ApplyPagedKV(v paged.View, w PagedKV) (paged.View, error) {
	var err error
	if w.Step.HasPrefill() {
		if v, err = v.WritePrefill(w.PrefillKey, w.PrefillValue, w.Step); err != nil {
			return v, err
		}
	}
	if w.Step.HasDecodes() {
		v, err = v.WriteDecodes(w.DecodeKey, w.DecodeValue, w.Step)
	}
	return v, err
}

// Mamba2View returns Mamba2 layer layer's view.
func (c *HybridCaches) Mamba2View(layer int) (mamba2.View, error) { return c.Mamba2.View(layer) }

// WriteMamba2 replaces Mamba2 layer layer's conv windows and SSM states.
func (c *HybridCaches) WriteMamba2(layer int, convWindow, ssmState tensor.Tensor) (mamba2.View, error) {
	v, err := c.Mamba2.View(layer)
	if err != nil {
		return v, err
	}
	if v, err = ReplaceMamba2States(v, convWindow, ssmState); err != nil {
		return v, err
	}
	c.Mamba2, err = c.Mamba2.WithView(layer, v)
	return v, err
}

// ReplaceMamba2States returns v with every conv window set to convWindow
// (B, C, K) and every SSM state to ssmState (B, H, P, N).
func ReplaceMamba2States(v mamba2.View, convWindow, ssmState tensor.Tensor) (mamba2.View, error) {
	pos := make([]int32, convWindow.Dim(-1))
	for i := range pos {
		pos[i] = int32(i)
	}
	v, err := v.UpdateConvStatePositions(convWindow, pos)
	if err != nil {
		return v, err
	}
	return v.UpdateSSMState(ssmState)
}

// LightningView returns lightning layer layer's view.
func (c *HybridCaches) LightningView(layer int) (lightning.View, error) {
	return c.Lightning.View(layer)
}

// WriteLightning replaces lightning layer layer's key_value states.
func (c *HybridCaches) WriteLightning(layer int, keyValue tensor.Tensor) (lightning.View, error) {
	var err error
	if c.Lightning, err = c.Lightning.UpdateKeyValue(layer, keyValue); err != nil {
		return lightning.View{}, err
	}
	return c.Lightning.View(layer)
}
