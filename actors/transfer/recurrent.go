package transfer

import (
	"context"
	"fmt"
	"strconv"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Recurrent state names: RecurrentName(prefix, l, part) names part
// ("conv", "ssm" or "kv") of layer l of the recurrent cache the bundle
// calls prefix (e.g. "mamba2", "lightning"): a hybrid model's sequence
// bundle carries its paged KV and the rows of each of its state caches.
func RecurrentName(prefix string, l int, part string) string {
	return prefix + "/layer/" + strconv.Itoa(l) + "/" + part
}

// RecurrentRow packs batch row row of every layer of a Mamba, Mamba2 or
// lightning cache version as named states (RecurrentName under prefix):
// the conv and SSM states of a Mamba or Mamba2 layer, the key_value state
// of a lightning layer, each of shape (1, ...) in the cache's dtype. Add
// them to a PagedSequence bundle (its states argument) to move a hybrid
// sequence whole. A lightning layer without a state yet is an error.
func RecurrentRow(prefix string, v actors.Version, row int) (map[string]tensor.Tensor, error) {
	out := map[string]tensor.Tensor{}
	for l := range v.Views {
		view, err := v.Layer(l)
		if err != nil {
			return nil, err
		}
		parts, err := recurrentParts(view, l, v.Number)
		if err != nil {
			return nil, err
		}
		for name, t := range parts {
			r, err := rowOf(t, row)
			if err != nil {
				return nil, fmt.Errorf("%w: layer %d %s: %v", ErrBundle, l, name, err)
			}
			out[RecurrentName(prefix, l, name)] = r
		}
	}
	return out, nil
}

// recurrentParts returns a state view's tensors by part name.
func recurrentParts(view any, l int, version uint64) (map[string]tensor.Tensor, error) {
	switch v := view.(type) {
	case mamba.View:
		return map[string]tensor.Tensor{"conv": v.ConvStates(), "ssm": v.SSMStates()}, nil
	case mamba2.View:
		return map[string]tensor.Tensor{"conv": v.ConvStates(), "ssm": v.SSMStates()}, nil
	case lightning.View:
		if !v.HasKeyValue() {
			return nil, fmt.Errorf("%w: lightning layer %d of version %d has no key_value state yet", ErrBundle, l, version)
		}
		return map[string]tensor.Tensor{"kv": v.KeyValue()}, nil
	}
	return nil, fmt.Errorf("%w: layer %d of version %d is a %T, not a Mamba, Mamba2 or lightning view", ErrBundle, l, version, view)
}

// rowOf copies batch row row of t (B, ...) as a (1, ...) tensor.
func rowOf(t tensor.Tensor, row int) (tensor.Tensor, error) {
	if t.Rank() < 1 || row < 0 || row >= t.Dim(0) {
		return tensor.Tensor{}, fmt.Errorf("row %d of a tensor of shape %v", row, t.Shape())
	}
	n := t.Len() / t.Dim(0)
	buf := make([]byte, n*t.DType().Size())
	if err := t.ReadBytes(buf, t.DType(), row*n); err != nil {
		return tensor.Tensor{}, err
	}
	shape := t.Shape()
	shape[0] = 1
	return tensor.WrapBytes(t.DType(), buf, shape...)
}

// withRow returns t with batch row row replaced by src (1, ...); t itself
// is unchanged.
func withRow(t, src tensor.Tensor, row int) (tensor.Tensor, error) {
	want := t.Shape()
	if len(want) < 1 || row < 0 || row >= want[0] {
		return tensor.Tensor{}, fmt.Errorf("row %d of a tensor of shape %v", row, want)
	}
	want[0] = 1
	if !src.HasShape(want...) || src.DType() != t.DType() {
		return tensor.Tensor{}, fmt.Errorf("a %s row of shape %v for a %s tensor of shape %v (want %v)", src.DType(), src.Shape(), t.DType(), t.Shape(), want)
	}
	ed := t.Edit()
	if err := ed.Write(row*src.Len(), src, 0, src.Len()); err != nil {
		return tensor.Tensor{}, err
	}
	return ed.Tensor(), nil
}

// ApplyRecurrent writes the states RecurrentRow packed under prefix into
// batch row row of every layer of state cache c (embedded or clustered),
// on top of version base, as one Step (the other rows keep their states):
// the receiving side of a hybrid sequence's move. It returns the new
// version. A missing state or one of the wrong shape or dtype is an error
// naming it; nothing is written then.
func ApplyRecurrent(ctx context.Context, c StateCache, base uint64, row int, prefix string, b Bundle) (uint64, error) {
	v, err := c.Snapshot(ctx, base)
	if err != nil {
		return 0, err
	}
	writes := make([]actors.LayerWrite, len(v.Views))
	for l := range v.Views {
		view, err := v.Layer(l)
		if err != nil {
			return 0, err
		}
		parts, err := recurrentParts(view, l, base)
		if _, ok := view.(lightning.View); ok && err != nil {
			parts, err = map[string]tensor.Tensor{"kv": tensor.Tensor{}}, nil // an absent state is written whole
		}
		if err != nil {
			return 0, err
		}
		next := map[string]tensor.Tensor{}
		for name, t := range parts {
			src, ok := b.Tensor(RecurrentName(prefix, l, name))
			if !ok {
				return 0, fmt.Errorf("%w: bundle has no %s", ErrBundle, RecurrentName(prefix, l, name))
			}
			if t.IsZero() {
				if t, err = zerosLike(view.(lightning.View), src); err != nil {
					return 0, fmt.Errorf("%w: %s: %v", ErrBundle, RecurrentName(prefix, l, name), err)
				}
			}
			if next[name], err = withRow(t, src, row); err != nil {
				return 0, fmt.Errorf("%w: %s: %v", ErrBundle, RecurrentName(prefix, l, name), err)
			}
		}
		switch view.(type) {
		case mamba.View:
			writes[l] = actors.LayerWrite{Layer: l, Write: &actors.MambaWrite{ConvSSM: actors.ConvSSM{ConvWindow: next["conv"], SSMState: next["ssm"]}}}
		case mamba2.View:
			writes[l] = actors.LayerWrite{Layer: l, Write: &actors.Mamba2Write{ConvSSM: actors.ConvSSM{ConvWindow: next["conv"], SSMState: next["ssm"]}}}
		default:
			writes[l] = actors.LayerWrite{Layer: l, Write: &actors.LightningWrite{KeyValue: next["kv"]}}
		}
	}
	n, _, err := c.Step(ctx, base, writes)
	return n, err
}

// zerosLike is a lightning layer's absent state as zeros: (B, H, Dk, Dv)
// with B from the layer's metadata and the rest from a row of it.
func zerosLike(v lightning.View, row tensor.Tensor) (tensor.Tensor, error) {
	md := v.Metadata()
	if md.BatchSize == nil {
		return tensor.Tensor{}, fmt.Errorf("the lightning layer's metadata has no batch_size")
	}
	shape := row.Shape()
	shape[0] = *md.BatchSize
	return tensor.New(row.DType(), shape...)
}
