package lightning

import (
	"fmt"
	"math"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
	"github.com/kvmesh/kvmesh/layers/internal/rowstore"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// store keeps the key_value state in package rowstore's layout, one storage
// chunk per batch row, so an update of some rows shares the other rows'
// storage, and reports its failures with this package's sentinel errors.
var store = rowstore.Ops{Shape: ErrShape, OutOfRange: ErrOutOfRange, Incompatible: ErrIncompatible}

// View is one layer's lightning-attention state: EasyDeL's
// LightningCacheView. KeyValue is the recurrent linear-attention state
// (B, H, Dk, Dv) of the cache dtype, the decayed sum of k_jᵀ v_j; it is
// absent (the zero tensor.Tensor, EasyDeL's None) until the first Update or
// UpdateKeyValue, and an absent state reads as zeros in the recurrence.
//
// The zero View is the empty view (EasyDeL's None entry of a cache); see
// IsEmpty. A View is an immutable value: every update returns a new View and
// leaves the receiver, its tensor and the inputs unchanged (EasyDeL's models
// assign key_value on the view in place).
type View struct {
	kv    tensor.Tensor
	dtype tensor.DType
	meta  Metadata
	layer layerlist.Index
}

// NewView returns a view for meta whose key_value is absent (EasyDeL's
// LightningCacheView.init), with the given layer index (nil for none). The
// state will have dtype.
//
// Deviation from EasyDeL: the view records the state's dtype up front
// (EasyDeL's key_value takes whatever dtype the model assigns).
func NewView(meta Metadata, dtype tensor.DType, layerIndex *int) (View, error) {
	if err := meta.Validate(); err != nil {
		return View{}, err
	}
	if !dtype.IsFloat() {
		return View{}, fmt.Errorf("%w: cache dtype %s (want float32, bfloat16, float16 or float64)", ErrDType, dtype)
	}
	return View{dtype: dtype, meta: meta.clone(), layer: layerlist.IndexOf(layerIndex)}, nil
}

// IsEmpty reports whether v is the empty view (EasyDeL's None entry of a
// cache; not a view whose key_value is absent).
func (v View) IsEmpty() bool { return !v.dtype.Valid() }

// KeyValue returns the state (B, H, Dk, Dv), or the zero Tensor while it is
// absent.
func (v View) KeyValue() tensor.Tensor { return v.kv }

// HasKeyValue reports whether the state is present (EasyDeL's key_value is
// not None).
func (v View) HasKeyValue() bool { return !v.kv.IsZero() }

// DType returns the cache dtype (0 for the empty view).
func (v View) DType() tensor.DType { return v.dtype }

// Metadata returns the view's metadata.
func (v View) Metadata() Metadata { return v.meta.clone() }

// LayerIndex returns the view's layer index; ok is false when it has none
// (EasyDeL's layer_index=None).
func (v View) LayerIndex() (layer int, ok bool) { return v.layer.Get() }

// String describes the view as "LightningCacheView(key_value=float32[2 4 4 4],
// layer_index=0)", with key_value=None while the state is absent; the empty
// view is "None".
func (v View) String() string {
	if v.IsEmpty() {
		return "None"
	}
	return fmt.Sprintf("LightningCacheView(key_value=%s, layer_index=%s)", stateString(v), v.layer)
}

func (v View) checkNotEmpty(op string) error {
	if v.IsEmpty() {
		return fmt.Errorf("%w: %s on an empty view", ErrEmpty, op)
	}
	return nil
}

// stateShape returns the shape the state must have: the existing state's,
// else the metadata's with 0 for unknown sizes.
func (v View) stateShape() [4]int {
	if v.HasKeyValue() {
		return [4]int{v.kv.Dim(0), v.kv.Dim(1), v.kv.Dim(2), v.kv.Dim(3)}
	}
	return v.meta.StateShape()
}

// checkState checks that a state shape (B, H, Dk, Dv) agrees with the
// existing state or, while it is absent, with every size the metadata gives.
// A 0 in got is not checked.
func (v View) checkState(what string, got [4]int) error {
	want := v.stateShape()
	names := [4]string{"batch", "heads", "key dim", "value dim"}
	for i := range got {
		if want[i] != 0 && got[i] != 0 && got[i] != want[i] {
			src := "the metadata"
			if v.HasKeyValue() {
				src = "the key_value state " + v.kv.String()
			}
			return fmt.Errorf("%w: %s has %s %d, %s has %d", ErrIncompatible, what, names[i], got[i], src, want[i])
		}
	}
	return nil
}

// Update returns the view after feeding T tokens per row through the
// linear-attention recurrence, in order (one token or many):
//
//	kv[b,h] = exp(-slopeRate[h]) · kv[b,h] + key[b,h,t]ᵀ · value[b,h,t]
//
// key is (B, H, T, Dk) and value (B, H, T, Dv), both converted to the cache
// dtype first (astype); slopeRate holds the H per-head decay rates s_h (see
// SlopeRates). An absent state starts at zeros. The output a mixer needs
// for token t, q_t · kv, reads the state after token t, so a decode step is
// Update with T = 1 followed by that product on KeyValue.
//
// The recurrence runs in float64 and the state is rounded to the cache
// dtype once per call: a T-token Update equals T one-token Updates exactly
// in a float64 cache, and within one rounding per token otherwise. HF's
// block-wise prefill computes the same state in exact arithmetic.
//
// Deviation from EasyDeL: EasyDeL's view has no update (its
// concatenate_to_cache is a broken copy of the transformer one); its model
// code assigns key_value, decaying an existing state by exp(-s) instead of
// exp(-s·n) for an n-token chunk (harmless only while the state is zero).
// Update applies the per-token recurrence exactly.
func (v View) Update(key, value tensor.Tensor, slopeRate []float64) (View, error) {
	if err := v.checkNotEmpty("Update"); err != nil {
		return View{}, err
	}
	if key.IsZero() || value.IsZero() || key.Rank() != 4 || value.Rank() != 4 ||
		key.Dim(0) != value.Dim(0) || key.Dim(1) != value.Dim(1) || key.Dim(2) != value.Dim(2) {
		return View{}, fmt.Errorf("%w: key %s and value %s, want (batch, heads, tokens, key dim) and (batch, heads, tokens, value dim) with equal batch, heads and tokens",
			ErrShape, shapeOf(key), shapeOf(value))
	}
	b, h, t, dk, dv := key.Dim(0), key.Dim(1), key.Dim(2), key.Dim(3), value.Dim(3)
	if t == 0 || dk == 0 || dv == 0 || b == 0 || h == 0 {
		return View{}, fmt.Errorf("%w: key %s and value %s have no elements (want at least one token)", ErrShape, shapeOf(key), shapeOf(value))
	}
	if err := v.checkState("key/value", [4]int{b, h, dk, dv}); err != nil {
		return View{}, err
	}
	if len(slopeRate) != h {
		return View{}, fmt.Errorf("%w: %d slope rates for %d heads", ErrShape, len(slopeRate), h)
	}
	decay := make([]float64, h)
	for i, s := range slopeRate {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return View{}, fmt.Errorf("%w: slope rate of head %d is %v", ErrSlope, i, s)
		}
		decay[i] = math.Exp(-s)
	}

	kv := make([]float64, b*h*dk*dv)
	if v.HasKeyValue() {
		if err := v.kv.ReadFloat64s(kv, 0); err != nil {
			return View{}, fmt.Errorf("%w: %v", ErrShape, err)
		}
	}
	ks, vs := v.rounded(key), v.rounded(value)
	for bh := 0; bh < b*h; bh++ {
		d := decay[bh%h]
		s := kv[bh*dk*dv : (bh+1)*dk*dv]
		for tok := 0; tok < t; tok++ {
			kt := ks[(bh*t+tok)*dk : (bh*t+tok+1)*dk]
			vt := vs[(bh*t+tok)*dv : (bh*t+tok+1)*dv]
			for i, ki := range kt {
				row := s[i*dv : (i+1)*dv]
				for j, vj := range vt {
					row[j] = d*row[j] + ki*vj
				}
			}
		}
	}
	return v.withState(kv, b, h, dk, dv)
}

// rounded returns t's elements rounded to the cache dtype (astype).
func (v View) rounded(t tensor.Tensor) []float64 {
	out := t.Float64s()
	if t.DType() != v.dtype && v.dtype != tensor.Float64 {
		for i, x := range out {
			out[i] = v.dtype.Round(x)
		}
	}
	return out
}

// withState returns the view holding kv, rounded to the cache dtype, in the
// store layout.
func (v View) withState(kv []float64, b, h, dk, dv int) (View, error) {
	src, err := tensor.FromFloat64s(v.dtype, kv, b, h, dk, dv)
	if err != nil {
		return View{}, fmt.Errorf("%w: %v", ErrShape, err)
	}
	next := v
	if next.kv, err = store.Fill(v.dtype, src, b, h, dk, dv); err != nil {
		return View{}, err
	}
	return next, nil
}

// UpdateKeyValue returns the view with key_value replaced by kv
// (B, H, Dk, Dv), converted to the cache dtype: what EasyDeL's models do by
// assigning cache_view.key_value, e.g. after a block-wise prefill. kv must
// agree with the existing state, or with the metadata while it is absent.
func (v View) UpdateKeyValue(kv tensor.Tensor) (View, error) {
	if err := v.checkNotEmpty("UpdateKeyValue"); err != nil {
		return View{}, err
	}
	if kv.IsZero() || kv.Rank() != 4 || kv.Len() == 0 {
		return View{}, fmt.Errorf("%w: key_value has shape %s, want (batch, heads, key dim, value dim)", ErrShape, shapeOf(kv))
	}
	if err := v.checkState("key_value", [4]int{kv.Dim(0), kv.Dim(1), kv.Dim(2), kv.Dim(3)}); err != nil {
		return View{}, err
	}
	st, err := store.Fill(v.dtype, kv, kv.Shape()...)
	if err != nil {
		return View{}, err
	}
	next := v
	next.kv = st
	return next, nil
}

// Reset returns the view with key_value absent, as NewView made it (EasyDeL
// has no reset for this view).
func (v View) Reset() (View, error) {
	if err := v.checkNotEmpty("Reset"); err != nil {
		return View{}, err
	}
	next := v
	next.kv = tensor.Tensor{}
	return next, nil
}

// ResetRows returns the view with the state of the given batch rows zeroed
// (a freed decode slot); the other rows share the receiver's storage. While
// the state is absent it stays absent. Rows must be distinct and in range
// (of the state's batch, or of batch_size while it is absent). Not in
// EasyDeL.
func (v View) ResetRows(rows ...int) (View, error) {
	if err := v.checkNotEmpty("ResetRows"); err != nil {
		return View{}, err
	}
	if !v.HasKeyValue() {
		if b := v.meta.StateShape()[0]; b != 0 {
			if err := store.CheckRows(rows, b); err != nil {
				return View{}, err
			}
		}
		return v, nil
	}
	if err := store.CheckRows(rows, v.kv.Dim(0)); err != nil {
		return View{}, err
	}
	next := v
	var err error
	if next.kv, err = store.ZeroRows(v.kv, rows); err != nil {
		return View{}, err
	}
	return next, nil
}

// Insert returns the view whose rows [slot, slot+B') hold o's B' rows,
// sharing o's storage instead of copying it: the transfer of a prefilled
// sequence into a decode slot. An absent state on either side stands for
// zeros; when the receiver's state is absent and o's is not, the receiver's
// metadata must give batch_size. Both views must have the same dtype and
// per-row state shape. Not in EasyDeL.
func (v View) Insert(o View, slot int) (View, error) {
	if err := v.checkNotEmpty("Insert"); err != nil {
		return View{}, err
	}
	if o.IsEmpty() {
		return View{}, fmt.Errorf("%w: Insert of an empty view", ErrEmpty)
	}
	if v.dtype != o.dtype {
		return View{}, fmt.Errorf("%w: inserting a %s state into a %s cache", ErrIncompatible, o.dtype, v.dtype)
	}
	batch := v.stateShape()[0]
	if batch == 0 {
		return View{}, fmt.Errorf("%w: Insert into a view whose batch size is unknown (absent key_value and no batch_size)", ErrIncompatible)
	}
	rows := o.stateShape()[0]
	if rows == 0 {
		return View{}, fmt.Errorf("%w: Insert of a view whose batch size is unknown (absent key_value and no batch_size)", ErrIncompatible)
	}
	if slot < 0 || slot+rows > batch {
		return View{}, fmt.Errorf("%w: slot %d for %d rows (batch has rows 0..%d)", ErrOutOfRange, slot, rows, batch-1)
	}
	switch {
	case !o.HasKeyValue() && !v.HasKeyValue():
		return v, nil
	case !o.HasKeyValue():
		idx := make([]int, rows)
		for i := range idx {
			idx[i] = slot + i
		}
		return v.ResetRows(idx...)
	}
	if err := v.checkState("the inserted key_value", [4]int{0 /* rows, checked above */, o.kv.Dim(1), o.kv.Dim(2), o.kv.Dim(3)}); err != nil {
		return View{}, err
	}
	dst := v.kv
	if !v.HasKeyValue() {
		var err error
		if dst, err = rowstore.New(v.dtype, batch, o.kv.Dim(1), o.kv.Dim(2), o.kv.Dim(3)); err != nil {
			return View{}, fmt.Errorf("%w: %v", ErrShape, err)
		}
	}
	next := v
	var err error
	if next.kv, err = store.ShareRows(dst, o.kv, slot); err != nil {
		return View{}, err
	}
	return next, nil
}

// SlopeRates returns the per-head decay rates of MiniMax lightning
// attention for layer layerIdx of numHiddenLayers, as Hugging Face's
// MiniMaxLightningAttention computes them:
//
//	s_h = (1 / 2^(8/H))^(h+1) · (1 - layerIdx/(numHiddenLayers-1+1e-5) + 1e-5)
//
// for h = 0..H-1. (EasyDeL indexes a single head's slope by the layer index
// instead, spec section 11.7.)
func SlopeRates(numHeads, layerIdx, numHiddenLayers int) ([]float64, error) {
	if numHeads <= 0 || numHiddenLayers <= 0 || layerIdx < 0 || layerIdx >= numHiddenLayers {
		return nil, fmt.Errorf("%w: SlopeRates(num_heads %d, layer %d, num_hidden_layers %d): want positive counts and a layer in [0, %d)",
			ErrSlope, numHeads, layerIdx, numHiddenLayers, numHiddenLayers)
	}
	base := 1 / math.Pow(2, 8/float64(numHeads))
	factor := 1 - float64(layerIdx)/(float64(numHiddenLayers)-1+1e-5) + 1e-5
	out := make([]float64, numHeads)
	for h := range out {
		out[h] = math.Pow(base, float64(h+1)) * factor
	}
	return out, nil
}

// shapeOf describes a tensor's shape for error messages.
func shapeOf(t tensor.Tensor) string {
	if t.IsZero() {
		return "<absent>"
	}
	return fmt.Sprint(t.Shape())
}
