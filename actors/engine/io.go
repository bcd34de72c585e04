package engine

import (
	"context"
	"fmt"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/reference"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// txnIO is the model's StepIO over one step's transactions: every write is
// a Txn.WriteLayer to the layer's actor, and what the model reads next is
// the Result's staged view. Recurrent layers are read from the version the
// transactions started on.
type txnIO struct {
	e                *engine
	ctx              context.Context
	kv, m2, lt       Txn
	m2Views, ltViews []any
}

var _ reference.StepIO = (*txnIO)(nil)

func (t *txnIO) write(txn Txn, layer int, w actors.Write) (any, error) {
	var res actors.Result
	err := t.e.timed(func() (err error) {
		res, err = txn.WriteLayer(t.ctx, layer, w)
		return err
	})
	return res.View, err
}

// WritePaged writes attention layer layer's keys and values.
func (t *txnIO) WritePaged(layer int, w reference.PagedKV) (paged.View, error) {
	if t.e.cfg.Fault == FaultKVZero && w.Step.HasDecodes() {
		w.DecodeKey = tensor.Must(tensor.New(tensor.Float64, w.DecodeKey.Shape()...))
		w.DecodeValue = w.DecodeKey
	}
	v, err := t.write(t.kv, layer, &actors.PagedWrite{PrefillKey: w.PrefillKey, PrefillValue: w.PrefillValue,
		DecodeKey: w.DecodeKey, DecodeValue: w.DecodeValue, Step: w.Step})
	if err != nil {
		return paged.View{}, err
	}
	pv, ok := v.(paged.View)
	if !ok {
		return paged.View{}, fmt.Errorf("%w: paged layer %d's staged view is a %T", ErrInternal, layer, v)
	}
	return pv, nil
}

// Mamba2View returns Mamba2 layer layer's view in the base version.
func (t *txnIO) Mamba2View(layer int) (mamba2.View, error) {
	v, ok := t.m2Views[layer].(mamba2.View)
	if !ok {
		return mamba2.View{}, fmt.Errorf("%w: mamba2 layer %d's view is a %T", ErrInternal, layer, t.m2Views[layer])
	}
	return v, nil
}

// WriteMamba2 replaces Mamba2 layer layer's conv windows and SSM states.
func (t *txnIO) WriteMamba2(layer int, convWindow, ssmState tensor.Tensor) (mamba2.View, error) {
	v, err := t.write(t.m2, layer, &actors.Mamba2Write{ConvSSM: actors.ConvSSM{ConvWindow: convWindow, SSMState: ssmState}})
	if err != nil {
		return mamba2.View{}, err
	}
	mv, ok := v.(mamba2.View)
	if !ok {
		return mamba2.View{}, fmt.Errorf("%w: mamba2 layer %d's staged view is a %T", ErrInternal, layer, v)
	}
	return mv, nil
}

// LightningView returns lightning layer layer's view in the base version.
func (t *txnIO) LightningView(layer int) (lightning.View, error) {
	v, ok := t.ltViews[layer].(lightning.View)
	if !ok {
		return lightning.View{}, fmt.Errorf("%w: lightning layer %d's view is a %T", ErrInternal, layer, t.ltViews[layer])
	}
	return v, nil
}

// WriteLightning replaces lightning layer layer's key_value states.
func (t *txnIO) WriteLightning(layer int, keyValue tensor.Tensor) (lightning.View, error) {
	v, err := t.write(t.lt, layer, &actors.LightningWrite{KeyValue: keyValue})
	if err != nil {
		return lightning.View{}, err
	}
	lv, ok := v.(lightning.View)
	if !ok {
		return lightning.View{}, fmt.Errorf("%w: lightning layer %d's staged view is a %T", ErrInternal, layer, v)
	}
	return lv, nil
}
