package paged

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// ErrStorageMismatch reports stored rows (Stored) written into a view that
// stores its pages in another form: another dtype, quantization or NF4
// block. Writing them would need a conversion, which WriteStored never
// does.
var ErrStorageMismatch = errors.New("paged: storage format mismatch")

// String describes the storage as "bfloat16" (unquantized), "bfloat16
// 8BIT" (int8 codes, bfloat16 scales) or "float32 NF4/64" (NF4 codes,
// float32 absmax per block of 64).
func (s Storage) String() string { return kvquant.StorageName(s.DType, s.Quantization, s.BlockSize) }

// Stored is a sequence's key and value rows in the form a view stores
// them (View.GatherStored), token-major as Gather returns values: row
// t·Hkv+h is position t of kv head h.
//
//   - Unquantized: Key and Value are the values, (T, Hkv, D) in
//     Storage.DType; KeyScales and ValueScales are zero.
//   - Int8: Key and Value are the int8 codes, (T, Hkv, D) of dtype
//     tensor.I8; KeyScales and ValueScales the scale of each row,
//     (T, Hkv, 1) in Storage.DType.
//   - NF4: Key and Value are the NF4 codes packed two per byte, high
//     nibble first, (T, Hkv, ceil(D/2)) of dtype tensor.U8; KeyScales and
//     ValueScales the absmax of each block of a row, (T, Hkv, D/block) in
//     Storage.DType.
//
// Storage is the view's, with the NF4 block size resolved (View.Storage).
// EasyDeL has no equivalent (its quantized arrays are read dequantized):
// Stored is kvmesh's own, so that moving a sequence between caches of one
// storage format (actors/transfer) copies its bytes instead of
// dequantizing and re-quantizing them, which is not lossless.
type Stored struct {
	Storage                Storage
	Key, Value             tensor.Tensor
	KeyScales, ValueScales tensor.Tensor
}

// Len returns the number of positions (T), 0 for the zero Stored.
func (s Stored) Len() int {
	if s.Key.IsZero() || s.Key.Rank() < 1 {
		return 0
	}
	return s.Key.Dim(0)
}

// NumBytes returns the bytes of the four tensors.
func (s Stored) NumBytes() int {
	n := 0
	for _, t := range []tensor.Tensor{s.Key, s.Value, s.KeyScales, s.ValueScales} {
		if !t.IsZero() {
			n += t.NumBytes()
		}
	}
	return n
}

// GatherStored returns the first length positions of a sequence, read
// through its page table, in the view's stored form: for a quantized view
// the codes and scales byte for byte (nothing is dequantized), for an
// unquantized one the values, as Gather returns them. The cost is that of
// the rows read; the view is unchanged. A length past the page table or a
// page outside [0, N) is an error wrapping ErrOutOfRange; pageTable may
// list pages in any order. EasyDeL has no equivalent: see Stored.
func (v View) GatherStored(pageTable []int32, length int) (Stored, error) {
	if err := v.checkGather(pageTable, length); err != nil {
		return Stored{}, err
	}
	out := Stored{Storage: v.Storage()}
	ks, vs := v.stores()
	var err error
	if out.Key, err = v.gather(ks.Data, ks.DataPerRow(), pageTable, length); err != nil {
		return Stored{}, fmt.Errorf("key: %w", err)
	}
	if out.Value, err = v.gather(vs.Data, vs.DataPerRow(), pageTable, length); err != nil {
		return Stored{}, fmt.Errorf("value: %w", err)
	}
	if !v.IsQuantized() {
		return out, nil
	}
	if out.KeyScales, err = v.gather(ks.Scales, ks.ScalesPerRow(), pageTable, length); err != nil {
		return Stored{}, fmt.Errorf("key scales: %w", err)
	}
	if out.ValueScales, err = v.gather(vs.Scales, vs.ScalesPerRow(), pageTable, length); err != nil {
		return Stored{}, fmt.Errorf("value scales: %w", err)
	}
	return out, nil
}

// WriteStored writes stored rows (GatherStored's) verbatim, byte for
// byte, into the pages of m's prefill part, as WritePrefill places a
// prefill chunk (m.PrefillPosition, m.PrefillLength and
// m.PrefillPageTable mean the same; rows at positions >= PrefillLength
// are not written). Nothing is quantized, dequantized or converted: s's
// Storage must equal the view's (dtype, quantization and NF4 block), or
// the error wraps ErrStorageMismatch and names both; tensors whose shapes
// or dtypes do not fit the view's format are an error wrapping ErrShape or
// ErrDType. Only the pages written are copied (copy-on-write, as
// WritePrefill); the view and s are unchanged. EasyDeL has no equivalent:
// see Stored.
func (v View) WriteStored(s Stored, m StepMetadata) (View, error) {
	if err := v.checkPresent(); err != nil {
		return View{}, err
	}
	if err := m.Validate(); err != nil {
		return View{}, err
	}
	if !m.HasPrefill() {
		return View{}, fmt.Errorf("%w: write stored: the prefill part is absent", ErrStep)
	}
	if want := v.Storage(); s.Storage.resolved() != want {
		return View{}, fmt.Errorf("%w: write stored: rows stored as %s into a view stored as %s (convert explicitly: Gather and WritePrefill)",
			ErrStorageMismatch, s.Storage, want)
	}
	f := v.format()
	if err := checkStored(f, v.meta.NumKVHeads, s); err != nil {
		return View{}, fmt.Errorf("write stored: %w", err)
	}
	start, end, err := v.prefillSpan(m, s.Len())
	if err != nil {
		return View{}, err
	}
	if end == start {
		return v, nil // only padding
	}
	kenc, err := f.Wrap(s.Key, s.KeyScales)
	if err != nil {
		return View{}, fmt.Errorf("%w: write stored key: %v", ErrShape, err)
	}
	venc, err := f.Wrap(s.Value, s.ValueScales)
	if err != nil {
		return View{}, fmt.Errorf("%w: write stored value: %v", ErrShape, err)
	}
	return v.writeSpan(&kenc, &venc, m.PrefillPageTable, start, end, "write stored")
}

// checkStored checks that s's tensors are (T, h, per) tensors of format
// f's dtypes, T the same in all of them.
func checkStored(f kvquant.Format, h int, s Stored) error {
	if s.Key.IsZero() || s.Value.IsZero() {
		return fmt.Errorf("%w: key %s and value %s must both be present", ErrShape, s.Key, s.Value)
	}
	T := s.Len()
	type component struct {
		name string
		t    tensor.Tensor
		dt   tensor.DType
		per  int
	}
	cs := []component{{"key", s.Key, f.DataDType(), f.DataPerRow()}, {"value", s.Value, f.DataDType(), f.DataPerRow()}}
	if f.Quantized() {
		cs = append(cs, component{"key scales", s.KeyScales, f.DType, f.ScalesPerRow()},
			component{"value scales", s.ValueScales, f.DType, f.ScalesPerRow()})
	} else if !s.KeyScales.IsZero() || !s.ValueScales.IsZero() {
		return fmt.Errorf("%w: scales %s and %s given for unquantized %s rows", ErrShape, s.KeyScales, s.ValueScales, f.DType)
	}
	for _, c := range cs {
		if c.t.IsZero() {
			return fmt.Errorf("%w: %s is absent", ErrShape, c.name)
		}
		if c.t.DType() != c.dt {
			return fmt.Errorf("%w: %s is %s, want %s", ErrDType, c.name, c.t.DType(), c.dt)
		}
		if !c.t.HasShape(T, h, c.per) {
			return fmt.Errorf("%w: %s has shape %v, want (%d, %d, %d)", ErrShape, c.name, c.t.Shape(), T, h, c.per)
		}
	}
	return nil
}
