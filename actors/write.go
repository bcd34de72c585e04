package actors

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// Write is one layer's part of a step: one of TransformerWrite, PagedWrite,
// PagedStoredWrite, MambaWrite, Mamba2Write, LightningWrite or InsertWrite. In-process, writes
// and their tensors travel by reference: nothing is copied or serialized.
type Write interface {
	// apply derives the layer's next view from view; it never changes view.
	apply(view any) (next any, result Result, err error)
	// split cuts the write into one write per device of base's mesh, in
	// device order: applying write i to base's part view i, for every i,
	// and joining gives what apply gives on the full view.
	split(base *Sharded) ([]Write, error)
}

// Result is what a layer write returns to the caller: for a contiguous
// cache, what attention needs (the full key and value, and the mask).
//
// For a layer of a sharded cache, Parts holds one Result per device, in
// the mesh's device order (each device's slice of the key and value, and
// the mask of its rows), and Key, Value and Mask are zero: a model running
// attention on the mesh reads each device's part there, and joining the
// parts on every step would cost a copy of the whole layer (O(S)), which
// the decode budget forbids. sharding.Join with the layer's specs rebuilds
// them when a caller really needs the full tensors.
type Result struct {
	Key, Value tensor.Tensor
	Mask       transformer.Mask
	Parts      []Result
	// View is the layer's view after the write (staged in a transaction,
	// published by a step): what a model reads next in the same layer, e.g.
	// the pages paged attention reads, or a recurrent state. A sharded
	// layer's is its *Sharded.
	View any
}

// TransformerWrite is a contiguous-cache write: ConcatenateToCache with the
// query, key and value of q new tokens per row (Query may be zero: then
// only Key's shape is used for it).
type TransformerWrite struct {
	Query, Key, Value tensor.Tensor
	Mask              transformer.Mask
	Options           transformer.ConcatOptions
}

func (w *TransformerWrite) apply(view any) (any, Result, error) {
	v, ok := view.(transformer.View)
	if !ok {
		return nil, Result{}, kindError("a transformer write", view)
	}
	q := w.Query
	if q.IsZero() {
		q = w.Key
	}
	k, val, mask, next, err := v.ConcatenateToCache(q, w.Key, w.Value, w.Mask, w.Options)
	return next, Result{Key: k, Value: val, Mask: mask}, err
}

// PagedWrite is a paged-cache write: a prefill chunk of one sequence, the
// decode tokens of every slot, or both (mixed), as Step says.
type PagedWrite struct {
	PrefillKey, PrefillValue tensor.Tensor // (T, Hkv, D)
	DecodeKey, DecodeValue   tensor.Tensor // (Bd, Hkv, D)
	Step                     paged.StepMetadata
}

func (w *PagedWrite) apply(view any) (any, Result, error) {
	v, ok := view.(paged.View)
	if !ok {
		return nil, Result{}, kindError("a paged write", view)
	}
	var err error
	if w.Step.HasPrefill() {
		if v, err = v.WritePrefill(w.PrefillKey, w.PrefillValue, w.Step); err != nil {
			return nil, Result{}, err
		}
	}
	if w.Step.HasDecodes() {
		if v, err = v.WriteDecodes(w.DecodeKey, w.DecodeValue, w.Step); err != nil {
			return nil, Result{}, err
		}
	}
	return v, Result{}, nil
}

// PagedStoredWrite writes one sequence's rows in the paged cache's stored
// form (paged.View.GatherStored's: int8 or NF4 codes and scales, or
// values) verbatim into the pages of Step's prefill part
// (paged.View.WriteStored): nothing is re-quantized, so a sequence moved
// between caches of one storage format arrives byte for byte. Rows whose
// storage format (dtype, quantization, NF4 block) differs from the
// cache's are refused with an error wrapping paged.ErrStorageMismatch that
// names both. Step's decode part must be absent.
//
// On a sharded cache the rows are cut by kv heads as a PagedWrite's
// prefill is: the values, or the codes and the scales of int8 or NF4 rows
// (paged.Specs.SplitStored). The cluster wire carries it too
// (LayerWrite.paged_stored), so a transfer can land in a clustered cache.
// EasyDeL has no equivalent: it is kvmesh's own, for actors/transfer.
type PagedStoredWrite struct {
	Rows paged.Stored
	Step paged.StepMetadata
}

func (w *PagedStoredWrite) apply(view any) (any, Result, error) {
	v, ok := view.(paged.View)
	if !ok {
		return nil, Result{}, kindError("a paged stored write", view)
	}
	if w.Step.HasDecodes() {
		return nil, Result{}, fmt.Errorf("%w: a paged stored write has %d decode slots (it writes a prefill span only)",
			paged.ErrStep, len(w.Step.DecodesPosition))
	}
	next, err := v.WriteStored(w.Rows, w.Step)
	if err != nil {
		return nil, Result{}, err
	}
	return next, Result{}, nil
}

// ConvSSM is the write of a Mamba or Mamba2 layer: shift ConvColumn (B, C)
// into the conv window at CachePosition, or set the whole window
// ConvWindow (B, C, K); then replace the SSM state with SSMState. Zero
// tensors are skipped.
type ConvSSM struct {
	ConvColumn    tensor.Tensor
	CachePosition int
	ConvWindow    tensor.Tensor
	SSMState      tensor.Tensor
}

// MambaWrite is a Mamba layer's write.
type MambaWrite struct{ ConvSSM }

// Mamba2Write is a Mamba2 layer's write; AdvanceSeq is EasyDeL's
// update_seq(n), applied last.
type Mamba2Write struct {
	ConvSSM
	AdvanceSeq int
}

// convSSMView is what MambaWrite and Mamba2Write need of a view.
type convSSMView[V any] interface {
	UpdateConvState(tensor.Tensor, int) (V, error)
	UpdateConvStatePositions(tensor.Tensor, []int32) (V, error)
	UpdateSSMState(tensor.Tensor) (V, error)
}

func applyConvSSM[V convSSMView[V]](v V, w ConvSSM) (V, error) {
	var err error
	if !w.ConvColumn.IsZero() {
		if v, err = v.UpdateConvState(w.ConvColumn, w.CachePosition); err != nil {
			return v, err
		}
	}
	if !w.ConvWindow.IsZero() {
		pos := make([]int32, w.ConvWindow.Dim(-1))
		for i := range pos {
			pos[i] = int32(i)
		}
		if v, err = v.UpdateConvStatePositions(w.ConvWindow, pos); err != nil {
			return v, err
		}
	}
	if !w.SSMState.IsZero() {
		if v, err = v.UpdateSSMState(w.SSMState); err != nil {
			return v, err
		}
	}
	return v, nil
}

func (w *MambaWrite) apply(view any) (any, Result, error) {
	v, ok := view.(mamba.View)
	if !ok {
		return nil, Result{}, kindError("a mamba write", view)
	}
	v, err := applyConvSSM(v, w.ConvSSM)
	return v, Result{}, err
}

func (w *Mamba2Write) apply(view any) (any, Result, error) {
	v, ok := view.(mamba2.View)
	if !ok {
		return nil, Result{}, kindError("a mamba2 write", view)
	}
	v, err := applyConvSSM(v, w.ConvSSM)
	if err == nil && w.AdvanceSeq != 0 {
		v, err = v.UpdateSeq(w.AdvanceSeq)
	}
	return v, Result{}, err
}

// LightningWrite feeds tokens through a lightning layer's recurrence
// (Key (B, H, T, Dk), Value (B, H, T, Dv), per-head SlopeRate), or replaces
// its state with KeyValue when that is set.
type LightningWrite struct {
	Key, Value tensor.Tensor
	SlopeRate  []float64
	KeyValue   tensor.Tensor
}

func (w *LightningWrite) apply(view any) (any, Result, error) {
	v, ok := view.(lightning.View)
	if !ok {
		return nil, Result{}, kindError("a lightning write", view)
	}
	if !w.KeyValue.IsZero() {
		v, err := v.UpdateKeyValue(w.KeyValue)
		return v, Result{}, err
	}
	v, err := v.Update(w.Key, w.Value, w.SlopeRate)
	return v, Result{}, err
}

// InsertWrite puts a prefilled contiguous view (one layer of a prefill
// cache) into batch rows [Slot, Slot+B') of a transformer layer, sharing its
// storage (EasyDeL's TransformerCache.insert, per layer). Other must be
// stored as the layer is (transformer.Storage: dtype, quantization, NF4
// block): int8 or NF4 rows are inserted as stored, codes and scales, and a
// view stored otherwise is refused with an error wrapping
// transformer.ErrIncompatible that names both storages (EasyDeL
// dequantizes both caches and re-quantizes the result; kvmesh never
// converts silently).
type InsertWrite struct {
	Slot  int
	Other transformer.View
}

func (w *InsertWrite) apply(view any) (any, Result, error) {
	v, ok := view.(transformer.View)
	if !ok {
		return nil, Result{}, kindError("an insert", view)
	}
	if err := checkInsertStorage(w.Other, v.Storage()); err != nil {
		return nil, Result{}, err
	}
	layer, _ := v.LayerIndex()
	dst, err := oneLayer(v, layer)
	if err != nil {
		return nil, Result{}, err
	}
	src, err := oneLayer(w.Other, layer)
	if err != nil {
		return nil, Result{}, err
	}
	out, err := dst.Insert(src, w.Slot)
	if err != nil {
		return nil, Result{}, err
	}
	next, err := out.View(0)
	return next, Result{}, err
}

// checkInsertStorage refuses an inserted view o stored otherwise than the
// layer it goes into (want), naming both storages.
func checkInsertStorage(o transformer.View, want transformer.Storage) error {
	if o.IsEmpty() {
		return fmt.Errorf("%w: the inserted view is empty", transformer.ErrEmpty)
	}
	if got := o.Storage(); got != want {
		return fmt.Errorf("%w: insert of rows stored as %s into a layer stored as %s (the runtime never re-quantizes: prefill into a cache of the layer's storage)",
			transformer.ErrIncompatible, got, want)
	}
	return nil
}

// storedPure returns v's plain form as stored: values, or the codes and
// scales of a quantized view (shared, not copied), with index, starts and
// the given layer index.
func storedPure(v transformer.View, layer *int) transformer.PureView {
	if !v.IsQuantized() {
		return transformer.PureView{Key: v.Key(), Value: v.Value(), Index: v.Index(), Starts: v.Starts(), LayerIndex: layer}
	}
	return transformer.PureView{Key: v.KeyCodes(), Value: v.ValueCodes(), KeyScales: v.KeyScales(), ValueScales: v.ValueScales(),
		BlockSize: v.Storage().BlockSize, Index: v.Index(), Starts: v.Starts(), LayerIndex: layer}
}

// oneLayer wraps a view as a one-layer cache, keeping its layer index, its
// storage (a quantized view's codes and scales, shared) and its metadata
// (num_hidden_layers included: the inserted view keeps the cache's
// metadata), so the cache-level Insert applies to it.
func oneLayer(v transformer.View, layer int) (transformer.Cache, error) {
	return transformer.FromPure(transformer.Pure{storedPure(v, &layer)}, v.Metadata())
}

func kindError(what string, view any) error {
	return fmt.Errorf("%w: %s on a %T layer", ErrKind, what, view)
}
