package reference

import (
	"fmt"
	"math"
	"slices"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// RecurrentState is the state of every recurrent layer of a Hybrid model
// for one sequence after some of its tokens: one entry per mamba2 or
// lightning layer, in layer order. A Mamba2 layer's entry is its conv
// window (C·K values, C = H·P+2·G·N) followed by its SSM state (H·P·N); a
// lightning layer's is its key_value state (H·Dh·Dh). With the pages of the
// attention layers up to the same token, it is all a sequence needs to go
// on: a prefix cache keeps one per page boundary (a checkpoint) so that a
// hybrid model can resume from a cached prefix.
type RecurrentState struct {
	Layers [][]float64
}

// StateCheckpoint is a sequence's RecurrentState after its first Tokens
// tokens.
type StateCheckpoint struct {
	Tokens int
	State  RecurrentState
}

// StepRow is one sequence's part of a cached step: Tokens at absolute
// positions Start, Start+1, ... (a prefill chunk, or the one token of a
// decode).
type StepRow struct {
	// Slot is the sequence's batch row in the recurrent caches (its decode
	// slot); rows of one step have distinct slots.
	Slot int
	// Tokens are the tokens to feed; at least one.
	Tokens []int32
	// Start is the position of Tokens[0]: the number of tokens of the
	// sequence already in the caches.
	Start int
	// PageTable is the sequence's page table in the paged cache (one entry
	// per logical page, NumPagesPerSequence of them); it must cover
	// positions up to Start+len(Tokens)-1.
	PageTable []int32
	// Restore, when set, is the recurrent state to start from (a checkpoint
	// after Start tokens) instead of the slot's state in the caches. A row
	// with Start 0 starts from zero states and must not set it.
	Restore *RecurrentState
	// CheckpointEvery, when positive, asks for the recurrent state after
	// every multiple of it among positions Start+1..Start+len(Tokens)
	// (page boundaries, for a prefix cache).
	CheckpointEvery int
}

// StepResult is what a cached step returns for one row.
type StepResult struct {
	// Next is the greedy token after the row's last token.
	Next int32
	// Checkpoints are the recurrent states the row's CheckpointEvery asked
	// for, in order (none for a model without recurrent layers).
	Checkpoints []StateCheckpoint
}

// PagedKV is one write into an attention layer's paged cache: a prefill
// chunk of one sequence, one token of each of some decode slots, or both,
// as Step says (paged.View.WritePrefill, then WriteDecodes).
type PagedKV struct {
	PrefillKey, PrefillValue tensor.Tensor // (T, Hkv, D)
	DecodeKey, DecodeValue   tensor.Tensor // (Bd, Hkv, D)
	Step                     paged.StepMetadata
}

// StepIO is the cache side of a cached step: a transaction over the three
// caches of a Hybrid model, whose layers are numbered within their kind
// (attention layer i is paged layer i). Each write returns the layer's view
// after it, staged: what the model reads next. The model writes each
// attention layer once per prefill row (at least once) and each recurrent
// layer once, reading recurrent states from the views before their write.
//
// HybridCaches implements it on cache values; a serving engine implements
// it on a runtime's transactions. Keeping the model behind this interface
// keeps it free of any runtime.
type StepIO interface {
	// WritePaged writes attention layer layer's keys and values.
	WritePaged(layer int, w PagedKV) (paged.View, error)
	// Mamba2View returns Mamba2 layer layer's view before this step's write.
	Mamba2View(layer int) (mamba2.View, error)
	// WriteMamba2 replaces Mamba2 layer layer's conv windows (B, C, K) and
	// SSM states (B, H, P, N).
	WriteMamba2(layer int, convWindow, ssmState tensor.Tensor) (mamba2.View, error)
	// LightningView returns lightning layer layer's view before this step's
	// write.
	LightningView(layer int) (lightning.View, error)
	// WriteLightning replaces lightning layer layer's key_value states
	// (B, H, Dh, Dh).
	WriteLightning(layer int, keyValue tensor.Tensor) (lightning.View, error)
}

// stepRow is a validated row with its place in the step's token buffer.
type stepRow struct {
	StepRow
	off   int               // index of its first token in the step's buffer
	ckpts []StateCheckpoint // one per multiple of CheckpointEvery reached
	out   *StepResult       // where its result goes
}

// Step runs rows through the caches io stands for, layer by layer, and
// returns each row's next token (and the checkpoints it asked for). The
// caches must be float64. Attention writes each row's keys and values
// into its pages, then attends over the staged view's pages through the
// row's page table; Mamba2 and lightning layers advance each row's state
// token by token from the slot's state (or zero at Start 0, or Restore),
// then write the whole batch's states back, the rows of other slots
// unchanged.
func (m *Hybrid) Step(rows []StepRow, io StepIO) ([]StepResult, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("%w: a step with no rows", ErrInput)
	}
	d := m.cfg.Hidden
	res := make([]StepResult, len(rows))
	rs := make([]*stepRow, len(rows))
	slots := map[int]int{}
	total := 0
	var tokens []int32
	for i, r := range rows {
		if len(r.Tokens) == 0 {
			return nil, fmt.Errorf("%w: step row %d has no tokens", ErrInput, i)
		}
		if err := m.checkTokens(r.Tokens); err != nil {
			return nil, fmt.Errorf("step row %d: %w", i, err)
		}
		if r.Start < 0 || r.Slot < 0 || r.CheckpointEvery < 0 {
			return nil, fmt.Errorf("%w: step row %d has start %d, slot %d, checkpoint_every %d (want >= 0)", ErrInput, i, r.Start, r.Slot, r.CheckpointEvery)
		}
		if j, dup := slots[r.Slot]; dup {
			return nil, fmt.Errorf("%w: step rows %d and %d share slot %d", ErrInput, j, i, r.Slot)
		}
		slots[r.Slot] = i
		if r.Restore != nil {
			if r.Start == 0 {
				return nil, fmt.Errorf("%w: step row %d restores a state at position 0", ErrInput, i)
			}
			if len(r.Restore.Layers) != m.recurrent {
				return nil, fmt.Errorf("%w: step row %d restores %d layer states, the model has %d recurrent layers", ErrInput, i, len(r.Restore.Layers), m.recurrent)
			}
		}
		sr := &stepRow{StepRow: r, off: total, out: &res[i]}
		if r.CheckpointEvery > 0 && m.recurrent > 0 {
			for p := (r.Start/r.CheckpointEvery + 1) * r.CheckpointEvery; p <= r.Start+len(r.Tokens); p += r.CheckpointEvery {
				sr.ckpts = append(sr.ckpts, StateCheckpoint{Tokens: p, State: RecurrentState{Layers: make([][]float64, m.recurrent)}})
			}
		}
		rs[i] = sr
		total += len(r.Tokens)
		tokens = append(tokens, r.Tokens...)
	}
	x := m.embedTokens(tokens)
	for li, l := range m.layers {
		xn := m.normed(x, l.norm)
		var err error
		switch l.kind {
		case LayerAttention:
			err = m.stepAttention(l, rs, xn, x, io)
		case LayerMamba2:
			err = m.stepMamba2(l, rs, xn, x, total, io)
		case LayerLightning:
			err = m.stepLightning(l, rs, xn, x, total, io)
		}
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s %d): %w", li, l.kind, l.index, err)
		}
	}
	for _, r := range rs {
		last := r.off + len(r.Tokens) - 1
		r.out.Next, _ = m.next(x[last*d : (last+1)*d])
		r.out.Checkpoints = r.ckpts
	}
	return res, nil
}

// stepAttention writes the rows' keys and values into attention layer l's
// pages and adds the attention output to x. The rows of one token go into
// one decode write, together with the first prefill row if there is one;
// every other row is a prefill write of its own. Attention then reads the
// view staged by the last write.
func (m *Hybrid) stepAttention(l hybridLayer, rs []*stepRow, xn, x []float64, io StepIO) error {
	d := m.cfg.Hidden
	hkv, dim := m.cfg.KVHeads, m.cfg.HeadDim
	qs := make([][]float64, len(rs))
	var dec, pre []int
	var dk, dv []float64
	writes := []PagedKV{{}}
	for i, r := range rs {
		t := len(r.Tokens)
		q, k, v := m.qkv(l.attn, xn[r.off*d:(r.off+t)*d], r.Start)
		qs[i] = q
		if t == 1 {
			dec = append(dec, i)
			dk, dv = append(dk, k...), append(dv, v...)
			continue
		}
		w := &writes[len(writes)-1]
		if w.Step.HasPrefill() {
			writes = append(writes, PagedKV{})
			w = &writes[len(writes)-1]
		}
		pre = append(pre, i)
		w.PrefillKey = tensor.Must(tensor.FromFloat64s(tensor.Float64, k, t, hkv, dim))
		w.PrefillValue = tensor.Must(tensor.FromFloat64s(tensor.Float64, v, t, hkv, dim))
		w.Step.PrefillLength = int32(r.Start + t)
		w.Step.PrefillPosition = make([]int32, t)
		for j := range t {
			w.Step.PrefillPosition[j] = int32(r.Start + j)
		}
		w.Step.PrefillPageTable = r.PageTable
	}
	if len(dec) > 0 {
		w := &writes[0]
		w.DecodeKey = tensor.Must(tensor.FromFloat64s(tensor.Float64, dk, len(dec), hkv, dim))
		w.DecodeValue = tensor.Must(tensor.FromFloat64s(tensor.Float64, dv, len(dec), hkv, dim))
		w.Step.DecodesPosition = make([]int32, len(dec))
		w.Step.DecodesPageTable = make([][]int32, len(dec))
		for j, i := range dec {
			w.Step.DecodesPosition[j] = int32(rs[i].Start)
			w.Step.DecodesPageTable[j] = rs[i].PageTable
		}
	}
	var view paged.View
	for _, w := range writes {
		var err error
		if view, err = io.WritePaged(l.index, w); err != nil {
			return err
		}
	}
	if view.DType() != tensor.Float64 {
		return fmt.Errorf("%w: the paged cache holds %s, the hybrid model needs float64", ErrInput, view.DType())
	}
	kp, vp := view.KeyPages(), view.ValuePages()
	attend := func(idx []int, t int) error {
		in := PagedInput{KeyPages: kp, ValuePages: vp, PageTables: make([][]int32, len(idx)), Positions: make([][]int32, len(idx))}
		var q []float64
		for j, i := range idx {
			r := rs[i]
			q = append(q, qs[i]...)
			in.PageTables[j] = r.PageTable
			in.Positions[j] = make([]int32, t)
			for p := range t {
				in.Positions[j][p] = int32(r.Start + p)
			}
		}
		in.Query = tensor.Must(tensor.FromFloat64s(tensor.Float64, q, len(idx), t, m.cfg.Heads, dim))
		o, err := AttentionPaged(in, tensor.Float64)
		if err != nil {
			return err
		}
		out := o.Float64s()
		hq := m.cfg.Heads * dim
		for j, i := range idx {
			r := rs[i]
			m.addOut(x[r.off*d:(r.off+t)*d], l.attn, out[j*t*hq:(j+1)*t*hq])
		}
		return nil
	}
	if len(dec) > 0 {
		if err := attend(dec, 1); err != nil {
			return err
		}
	}
	for _, i := range pre {
		if err := attend([]int{i}, len(rs[i].Tokens)); err != nil {
			return err
		}
	}
	return nil
}

// startState returns the state row r starts from in recurrent layer rec,
// n values: its Restore entry, zeros at position 0, or a copy of its slot's
// state (slot, which must be one of the cache's rows).
func startState(r *stepRow, rec, n, rows int, slot func() []float64) ([]float64, error) {
	if r.Slot >= rows {
		return nil, fmt.Errorf("%w: slot %d is outside the cache's %d batch rows", ErrInput, r.Slot, rows)
	}
	switch {
	case r.Restore != nil:
		s := r.Restore.Layers[rec]
		if len(s) != n {
			return nil, fmt.Errorf("%w: slot %d restores %d values for recurrent layer %d, want %d", ErrInput, r.Slot, len(s), rec, n)
		}
		return slices.Clone(s), nil
	case r.Start == 0:
		return make([]float64, n), nil
	}
	return slot(), nil
}

// mark stores state (the layer's state after token at index t of row r, a
// position of r.Start+t+1 tokens) into r's checkpoint at that position, if
// it asked for one.
func (r *stepRow) mark(rec, t int, state func() []float64) {
	if r.CheckpointEvery <= 0 {
		return
	}
	p := r.Start + t + 1
	if p%r.CheckpointEvery != 0 {
		return
	}
	for i := range r.ckpts {
		if r.ckpts[i].Tokens == p {
			r.ckpts[i].State.Layers[rec] = state()
		}
	}
}

// stepMamba2 advances the rows through Mamba2 layer l token by token (the
// new input shifted into the conv window, the conv output read off it, the
// SSM state advanced: Mamba2.Step's math), writes the batch's windows and
// states, and adds the outputs to x.
func (m *Hybrid) stepMamba2(l hybridLayer, rs []*stepRow, xn, x []float64, total int, io StepIO) error {
	view, err := io.Mamba2View(l.index)
	if err != nil {
		return err
	}
	convT, ssmT := view.ConvStates(), view.SSMStates()
	if convT.DType() != tensor.Float64 || ssmT.DType() != tensor.Float64 {
		return fmt.Errorf("%w: the mamba2 cache holds %s, the hybrid model needs float64", ErrInput, convT.DType())
	}
	mx, _, _, err := bindMamba2[float64](l.m2, Mamba2Input{Hidden: tensor.Must(tensor.FromFloat64s(tensor.Float64, xn, 1, total, m.cfg.Hidden))})
	if err != nil {
		return err
	}
	ch, k, sn := mx.dims()
	rows := convT.Dim(0)
	if err := fitsCache(convT, ssmT, []int{rows, ch, k}, append([]int{rows}, mx.stateShape()...)); err != nil {
		return err
	}
	conv, ssm := vec[float64](convT), vec[float64](ssmT)
	w, bias := mx.conv()
	d := m.cfg.Hidden
	for _, r := range rs {
		st, err := startState(r, l.rec, ch*k+sn, rows, func() []float64 {
			return append(slices.Clone(conv[r.Slot*ch*k:(r.Slot+1)*ch*k]), ssm[r.Slot*sn:(r.Slot+1)*sn]...)
		})
		if err != nil {
			return err
		}
		window, state := st[:ch*k], st[ch*k:]
		c := make([]float64, ch)
		for t := range r.Tokens {
			col, side := mx.pre(0, r.off+t)
			shiftIn(window, col, k)
			convOut(c, window, w, bias, k)
			out := mx.post(c, side, state)
			addInto(x[(r.off+t)*d:(r.off+t+1)*d], out)
			r.mark(l.rec, t, func() []float64 { return append(slices.Clone(window), state...) })
		}
		copy(conv[r.Slot*ch*k:], window)
		copy(ssm[r.Slot*sn:], state)
	}
	nextConv, err := tensor.FromFloat64s(tensor.Float64, conv, convT.Shape()...)
	if err != nil {
		return err
	}
	nextSSM, err := tensor.FromFloat64s(tensor.Float64, ssm, ssmT.Shape()...)
	if err != nil {
		return err
	}
	_, err = io.WriteMamba2(l.index, nextConv, nextSSM)
	return err
}

// stepLightning advances the rows through lightning layer l token by token
// (kv = exp(-s)·kv + kᵀv, then the output q·kv: Lightning.Step's math),
// writes the batch's states, and adds the outputs to x.
func (m *Hybrid) stepLightning(l hybridLayer, rs []*stepRow, xn, x []float64, total int, io StepIO) error {
	view, err := io.LightningView(l.index)
	if err != nil {
		return err
	}
	if view.DType() != tensor.Float64 {
		return fmt.Errorf("%w: the lightning cache holds %s, the hybrid model needs float64", ErrInput, view.DType())
	}
	h, dh := m.cfg.LightningHeads, m.cfg.LightningHeadDim
	sn := h * dh * dh
	shape := view.Metadata().StateShape()
	kvT := view.KeyValue()
	var kv []float64
	if kvT.IsZero() {
		if shape[1] != h || shape[2] != dh || shape[3] != dh || shape[0] <= 0 {
			return fmt.Errorf("%w: the lightning cache's state is %v, the model needs (batch, %d, %d, %d)", ErrInput, shape, h, dh, dh)
		}
		kv = make([]float64, shape[0]*sn)
	} else {
		if kvT.Rank() != 4 || kvT.Dim(1) != h || kvT.Dim(2) != dh || kvT.Dim(3) != dh {
			return fmt.Errorf("%w: the lightning cache's state is %v, the model needs (batch, %d, %d, %d)", ErrInput, kvT.Shape(), h, dh, dh)
		}
		kv = vec[float64](kvT)
	}
	run, err := project[float64](l.light, tensor.Must(tensor.FromFloat64s(tensor.Float64, xn, 1, total, m.cfg.Hidden)))
	if err != nil {
		return err
	}
	slopes := l.light.slopes
	for _, r := range rs {
		state, err := startState(r, l.rec, sn, len(kv)/sn, func() []float64 { return slices.Clone(kv[r.Slot*sn : (r.Slot+1)*sn]) })
		if err != nil {
			return err
		}
		for t := range r.Tokens {
			gt := r.off + t
			for hh := range h {
				decay := math.Exp(-slopes[hh])
				st := state[hh*dh*dh : (hh+1)*dh*dh]
				at := (hh*total + gt) * dh
				q, k, v := run.q[at:at+dh], run.k[at:at+dh], run.v[at:at+dh]
				for y := range dh {
					for xi := range dh {
						st[y*dh+xi] = decay*st[y*dh+xi] + k[y]*v[xi]
					}
				}
				o := run.core[gt*h*dh+hh*dh : gt*h*dh+(hh+1)*dh]
				for xi := range dh {
					var acc float64
					for y := range dh {
						acc += q[y] * st[y*dh+xi]
					}
					o[xi] = acc
				}
			}
			r.mark(l.rec, t, func() []float64 { return slices.Clone(state) })
		}
		copy(kv[r.Slot*sn:], state)
	}
	addInto(x, run.finish())
	rows := len(kv) / sn
	next, err := tensor.FromFloat64s(tensor.Float64, kv, rows, h, dh, dh)
	if err != nil {
		return err
	}
	_, err = io.WriteLightning(l.index, next)
	return err
}
