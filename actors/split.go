package actors

import (
	"fmt"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// This file cuts each kind of write into one write per device of a sharded
// layer (Write.split), with the input splitters of the cache packages: a
// part write applied to its part view, joined over the mesh, gives the
// unsharded write's view byte for byte (the packages' shard tests check
// it; so do this package's).

// specsOf returns base's specs as the kind S that write w needs.
func specsOf[S any](base *Sharded, what string) (S, error) {
	s, ok := base.specs.(S)
	if !ok {
		var first any
		if len(base.parts) > 0 {
			first = base.parts[0]
		}
		return s, kindError(what, first)
	}
	return s, nil
}

// splitTensor cuts t by spec over mesh; a zero t (an input the write does
// not have) gives a zero tensor per device.
func splitTensor(t tensor.Tensor, spec sharding.Spec, mesh sharding.Mesh, name string) ([]tensor.Tensor, error) {
	if t.IsZero() {
		return make([]tensor.Tensor, mesh.NumDevices()), nil
	}
	parts, err := sharding.Split(t, spec, mesh)
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w", name, t.Shape(), err)
	}
	return parts, nil
}

// split cuts the key and value by the cache's write specs (kv heads and
// dims as the cache's, batch rows as the cache's, all q tokens to every
// shard), the attention mask and the options by batch rows, and the query
// by batch rows only: ConcatenateToCache uses only its batch and length,
// so its heads need not divide over the mesh.
func (w *TransformerWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[transformer.Specs](base, "a transformer write")
	if err != nil {
		return nil, err
	}
	mesh := base.mesh
	keys, values, err := specs.SplitWrite(w.Key, w.Value, mesh)
	if err != nil {
		return nil, err
	}
	queries, err := splitTensor(w.Query, specs.Key.Pick(0, -1, -1, -1), mesh, "query")
	if err != nil {
		return nil, err
	}
	masks, err := specs.SplitMask(w.Mask, mesh)
	if err != nil {
		return nil, err
	}
	opts, err := specs.SplitOptions(w.Options, mesh)
	if err != nil {
		return nil, err
	}
	out := make([]Write, mesh.NumDevices())
	for i := range out {
		out[i] = &TransformerWrite{Query: queries[i], Key: keys[i], Value: values[i], Mask: masks[i], Options: opts[i]}
	}
	return out, nil
}

// split cuts the prefill and decode tokens by the pages' head specs
// (SplitTokens); the step metadata (positions and page tables) is the same
// on every device and shared, not copied.
func (w *PagedWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[paged.Specs](base, "a paged write")
	if err != nil {
		return nil, err
	}
	n := base.mesh.NumDevices()
	pk, pv := make([]tensor.Tensor, n), make([]tensor.Tensor, n)
	dk, dv := make([]tensor.Tensor, n), make([]tensor.Tensor, n)
	if w.Step.HasPrefill() {
		if pk, pv, err = specs.SplitTokens(w.PrefillKey, w.PrefillValue, base.mesh); err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
	}
	if w.Step.HasDecodes() {
		if dk, dv, err = specs.SplitTokens(w.DecodeKey, w.DecodeValue, base.mesh); err != nil {
			return nil, fmt.Errorf("decodes: %w", err)
		}
	}
	out := make([]Write, n)
	for i := range out {
		out[i] = &PagedWrite{PrefillKey: pk[i], PrefillValue: pv[i], DecodeKey: dk[i], DecodeValue: dv[i], Step: w.Step}
	}
	return out, nil
}

// split cuts the stored rows by the pages' head specs (paged.Specs.SplitStored),
// as PagedWrite's prefill tokens: the values, or the codes and the scales
// of quantized rows; the step metadata is the same on every device.
func (w *PagedStoredWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[paged.Specs](base, "a paged stored write")
	if err != nil {
		return nil, err
	}
	meta, ok := base.meta.(paged.Metadata)
	if !ok {
		return nil, errorf(ErrInternal, "a paged stored write into a layer with metadata of type %T", base.meta)
	}
	if part, ok := base.parts[0].(paged.View); ok && w.Rows.Storage.Validate() == nil {
		// Refused here as the unsharded WriteStored refuses it, before the
		// rows are cut by a storage they do not have.
		if want := part.Storage(); w.Rows.Storage.Resolved() != want {
			return nil, fmt.Errorf("%w: write stored: rows stored as %s into a view stored as %s (convert explicitly: Gather and WritePrefill)",
				paged.ErrStorageMismatch, w.Rows.Storage, want)
		}
	}
	rows, err := specs.SplitStored(w.Rows, meta, base.mesh)
	if err != nil {
		return nil, fmt.Errorf("stored rows: %w", err)
	}
	out := make([]Write, len(rows))
	for i := range out {
		out[i] = &PagedStoredWrite{Rows: rows[i], Step: w.Step}
	}
	return out, nil
}

// splitConvSSM cuts a conv/SSM write by the conv column, conv window and
// SSM specs; the cache position is the same on every device.
func splitConvSSM(w ConvSSM, column, window, ssm sharding.Spec, mesh sharding.Mesh) ([]ConvSSM, error) {
	cols, err := splitTensor(w.ConvColumn, column, mesh, "conv column")
	if err != nil {
		return nil, err
	}
	wins, err := splitTensor(w.ConvWindow, window, mesh, "conv window")
	if err != nil {
		return nil, err
	}
	states, err := splitTensor(w.SSMState, ssm, mesh, "SSM state")
	if err != nil {
		return nil, err
	}
	out := make([]ConvSSM, mesh.NumDevices())
	for i := range out {
		out[i] = ConvSSM{ConvColumn: cols[i], CachePosition: w.CachePosition, ConvWindow: wins[i], SSMState: states[i]}
	}
	return out, nil
}

// split cuts the conv column, conv window and SSM state by the view's
// specs (ColumnSpec, WindowSpec, SSM).
func (w *MambaWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[mamba.Specs](base, "a mamba write")
	if err != nil {
		return nil, err
	}
	parts, err := splitConvSSM(w.ConvSSM, specs.ColumnSpec(), specs.WindowSpec(), specs.SSM, base.mesh)
	if err != nil {
		return nil, err
	}
	out := make([]Write, len(parts))
	for i, p := range parts {
		out[i] = &MambaWrite{ConvSSM: p}
	}
	return out, nil
}

// split cuts the conv column, conv window and SSM state by the view's
// specs; AdvanceSeq is the same on every device.
func (w *Mamba2Write) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[mamba2.Specs](base, "a mamba2 write")
	if err != nil {
		return nil, err
	}
	parts, err := splitConvSSM(w.ConvSSM, specs.ColumnSpec(), specs.WindowSpec(), specs.SSM, base.mesh)
	if err != nil {
		return nil, err
	}
	out := make([]Write, len(parts))
	for i, p := range parts {
		out[i] = &Mamba2Write{ConvSSM: p, AdvanceSeq: w.AdvanceSeq}
	}
	return out, nil
}

// split cuts Update's inputs by the state's specs (SplitUpdate: batch and
// heads, slope rates by heads), or the replacement state by the state's
// own spec.
func (w *LightningWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[lightning.Specs](base, "a lightning write")
	if err != nil {
		return nil, err
	}
	n := base.mesh.NumDevices()
	out := make([]Write, n)
	if !w.KeyValue.IsZero() {
		states, err := splitTensor(w.KeyValue, specs.KeyValue, base.mesh, "key_value")
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i] = &LightningWrite{KeyValue: states[i]}
		}
		return out, nil
	}
	keys, values, slopes, err := specs.SplitUpdate(w.Key, w.Value, w.SlopeRate, base.mesh)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i] = &LightningWrite{Key: keys[i], Value: values[i], SlopeRate: slopes[i]}
	}
	return out, nil
}

// split gives each device the inserted rows that fall in its own rows,
// cut to its kv heads and dims, at the matching local slot; a device none
// of whose rows is inserted keeps its part view. (Splitting Other by the
// cache's specs as they stand would cut Other's B' rows into as many
// blocks as the cache's B rows, which neither divides B' in general nor
// puts the rows on the devices that own the target slots.) The selected
// rows are copied once, into each device's part: a part is a device's own
// storage, so the unsharded insert's sharing cannot carry over. A
// quantized insert copies the rows' codes and scales verbatim, cut as the
// layer's own (transformer.View.Split); Other stored otherwise than the
// layer is refused before anything is cut.
func (w *InsertWrite) split(base *Sharded) ([]Write, error) {
	specs, err := specsOf[transformer.Specs](base, "an insert")
	if err != nil {
		return nil, err
	}
	meta, ok := base.meta.(transformer.Metadata)
	if !ok {
		return nil, errorf(ErrInternal, "an insert into a layer with metadata of type %T", base.meta)
	}
	o := w.Other
	if o.IsEmpty() {
		return nil, fmt.Errorf("%w: the inserted view is empty", transformer.ErrEmpty)
	}
	om := o.Metadata()
	B, rows := meta.BatchSize, om.BatchSize
	if om.SequenceLength != meta.SequenceLength || om.KeyHeads != meta.KeyHeads || om.KeyDim != meta.KeyDim ||
		om.ValueHeads != meta.ValueHeads || om.ValueDim != meta.ValueDim {
		return nil, fmt.Errorf("%w: inserting key %s / value %s into a layer of sequence length %d, key %d×%d, value %d×%d (want equal S, heads and dims)",
			transformer.ErrIncompatible, o.Key(), o.Value(), meta.SequenceLength, meta.KeyHeads, meta.KeyDim, meta.ValueHeads, meta.ValueDim)
	}
	if w.Slot < 0 || w.Slot+rows > B {
		return nil, fmt.Errorf("%w: slot %d with %d rows needs rows [%d, %d), batch has %d rows",
			transformer.ErrOutOfRange, w.Slot, rows, w.Slot, w.Slot+rows, B)
	}
	part0, ok := base.parts[0].(transformer.View)
	if !ok {
		return nil, errorf(ErrInternal, "part view 0 is a %T", base.parts[0])
	}
	// Refused here as the unsharded insert refuses it, before the rows are
	// cut by a storage they do not have.
	if err := checkInsertStorage(o, part0.Storage()); err != nil {
		return nil, err
	}
	mesh := base.mesh
	stored := storedPure(o, nil)
	// The stored tensors (values, or codes and scales) are cut by the key
	// and value specs, as transformer.View.Split cuts the layer's own.
	cuts := []struct {
		name string
		t    tensor.Tensor
		spec sharding.Spec
		set  func(p *transformer.PureView, t tensor.Tensor)
	}{
		{"key", stored.Key, specs.Key, func(p *transformer.PureView, t tensor.Tensor) { p.Key = t }},
		{"value", stored.Value, specs.Value, func(p *transformer.PureView, t tensor.Tensor) { p.Value = t }},
		{"key scales", stored.KeyScales, specs.Key, func(p *transformer.PureView, t tensor.Tensor) { p.KeyScales = t }},
		{"value scales", stored.ValueScales, specs.Value, func(p *transformer.PureView, t tensor.Tensor) { p.ValueScales = t }},
	}
	cutSlices := make([][]sharding.Slice, len(cuts))
	for c, cut := range cuts {
		if cut.t.IsZero() {
			continue // an unquantized view has no scales
		}
		var err error
		if cutSlices[c], err = sharding.ShardSlices([]int{B, meta.SequenceLength, cut.t.Dim(2), cut.t.Dim(3)}, cut.spec, mesh); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", transformer.ErrSharding, cut.name, err)
		}
	}
	index, starts := o.Index(), o.Starts()
	out := make([]Write, mesh.NumDevices())
	for i := range out {
		mine := cutSlices[0][i].Ranges[0] // the part's rows (the specs cut key, value, index and starts alike)
		lo, hi := max(mine.Start, w.Slot), min(mine.End, w.Slot+rows)
		if lo >= hi {
			out[i] = KeepWrite{}
			continue
		}
		src := sharding.Range{Start: lo - w.Slot, End: hi - w.Slot}
		whole := sharding.Range{Start: 0, End: meta.SequenceLength}
		pv := transformer.PureView{BlockSize: stored.BlockSize, Index: index[src.Start:src.End], Starts: starts[src.Start:src.End]}
		for c, cut := range cuts {
			if cut.t.IsZero() {
				continue
			}
			r := cutSlices[c][i].Ranges
			t, err := sharding.Extract(cut.t, []sharding.Range{src, whole, r[2], r[3]})
			if err != nil {
				return nil, fmt.Errorf("inserted %s, device %d: %w", cut.name, i, err)
			}
			cut.set(&pv, t)
		}
		dst, ok := base.parts[i].(transformer.View)
		if !ok {
			return nil, errorf(ErrInternal, "part view %d is a %T", i, base.parts[i])
		}
		pm := dst.Metadata()
		pm.NumHiddenLayers, pm.BatchSize = 1, hi-lo
		c, err := transformer.FromPure(transformer.Pure{pv}, pm)
		if err != nil {
			return nil, fmt.Errorf("inserted rows, device %d: %w", i, err)
		}
		part, err := c.View(0)
		if err != nil {
			return nil, err
		}
		out[i] = &InsertWrite{Slot: lo - mine.Start, Other: part}
	}
	return out, nil
}

// KeepWrite leaves a part view as it is: SplitWrite's part for a device
// that a write does not touch (an insert into rows another device owns).
// The clustered runtime sends it as a write with no kind.
type KeepWrite struct{}

func (KeepWrite) apply(view any) (any, Result, error) { return view, Result{}, nil }

func (KeepWrite) split(*Sharded) ([]Write, error) {
	return nil, errorf(ErrInternal, "a part write is not split again")
}
