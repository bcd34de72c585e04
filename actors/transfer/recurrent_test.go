package transfer

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func rowValues(t *testing.T, x tensor.Tensor, row int) []float64 {
	t.Helper()
	r, err := rowOf(x, row)
	require.NoError(t, err)
	return r.Float64s()
}

// A sequence's recurrent states move row to row: RecurrentRow packs batch
// row 1 of every Mamba2 and lightning layer of the prefill side's caches,
// ApplyRecurrent writes them into row 2 of the decode side's in one step
// each, the other rows keep their states, and a lightning layer with no
// state yet gets zeros in its other rows. A missing or misshapen state
// writes nothing.
func TestRecurrentRowMoves(t *testing.T) {
	ctx := context.Background()
	m2, err := mamba2.NewMetadata(mamba2.MetadataConfig{NumHiddenLayers: 2, BatchSize: 3, IntermediateSize: 8, NumHeads: 2, HeadDim: 4,
		StateSize: 3, ConvKernelSize: 3, NGroups: 1})
	require.NoError(t, err)
	three, two, four := 3, 2, 4
	lm, err := lightning.NewMetadata(lightning.MetadataConfig{BatchSize: &three, NumHeads: &two, HeadDim: &four})
	require.NoError(t, err)
	specs := map[string]actors.Spec{
		"mamba2":    {Mamba2: &actors.Mamba2Spec{Metadata: m2, DType: tensor.Float32}},
		"lightning": {Lightning: &actors.LightningSpec{Layers: 2, Metadata: lm, DType: tensor.Float64}},
	}
	r := rand.New(rand.NewPCG(1, 1))
	// fill every layer of both caches on a runtime with random states
	ids := 0
	filled := func(rt *actors.Runtime, name string) (*actors.Cache, actors.Version) {
		ids++
		c, err := rt.NewCache(name+strconv.Itoa(ids), specs[name])
		require.NoError(t, err)
		v0, err := c.Current(ctx)
		require.NoError(t, err)
		var ws []actors.LayerWrite
		for l, view := range v0.Views {
			switch v := view.(type) {
			case mamba2.View:
				ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.Mamba2Write{ConvSSM: actors.ConvSSM{
					ConvWindow: randomTensor(r, tensor.Float32, v.ConvStates().Shape()...), SSMState: randomTensor(r, tensor.Float32, v.SSMStates().Shape()...)}}})
			case lightning.View:
				ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.LightningWrite{KeyValue: randomTensor(r, tensor.Float64, 3, 2, 4, 4)}})
			}
		}
		_, _, err = c.Step(ctx, 0, ws)
		require.NoError(t, err)
		v, err := c.Current(ctx)
		require.NoError(t, err)
		return c, v
	}
	src, err := actors.NewRuntime()
	require.NoError(t, err)
	defer src.Close()
	dst, err := actors.NewRuntime()
	require.NoError(t, err)
	defer dst.Close()

	b := Bundle{Metadata: map[string]string{}}
	for _, name := range []string{"mamba2", "lightning"} {
		_, v := filled(src, name)
		states, err := RecurrentRow(name, v, 1)
		require.NoError(t, err)
		for n, x := range states {
			b.Names, b.Tensors = append(b.Names, n), append(b.Tensors, x)
		}
	}
	require.NoError(t, b.Validate())
	require.Len(t, b.Names, 2*2+2, "conv and ssm per Mamba2 layer, kv per lightning layer")

	parts := func(v actors.Version, l int) map[string]tensor.Tensor {
		p, err := recurrentParts(v.Views[l], l, v.Number)
		require.NoError(t, err)
		return p
	}
	for _, name := range []string{"mamba2", "lightning"} {
		c, before := filled(dst, name)
		n, err := ApplyRecurrent(ctx, c, before.Number, 2, name, b)
		require.NoError(t, err)
		after, err := c.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, n, after.Number)
		for l := range after.Views {
			for part, x := range parts(after, l) {
				moved, _ := b.Tensor(RecurrentName(name, l, part))
				assert.Equal(t, moved.Float64s(), rowValues(t, x, 2), "%s layer %d %s: row 2 is the moved row", name, l, part)
				for _, row := range []int{0, 1} {
					assert.Equal(t, rowValues(t, parts(before, l)[part], row), rowValues(t, x, row), "%s layer %d %s: row %d kept", name, l, part, row)
				}
			}
		}
	}

	// into a lightning cache with no state yet: the other rows are zeros
	fresh, err := dst.NewCache("fresh", specs["lightning"])
	require.NoError(t, err)
	_, err = ApplyRecurrent(ctx, fresh, 0, 0, "lightning", b)
	require.NoError(t, err)
	fv, err := fresh.Current(ctx)
	require.NoError(t, err)
	kv := fv.Views[1].(lightning.View).KeyValue()
	moved, _ := b.Tensor(RecurrentName("lightning", 1, "kv"))
	assert.Equal(t, moved.Float64s(), rowValues(t, kv, 0))
	assert.Equal(t, make([]float64, 2*4*4), rowValues(t, kv, 2))

	// a bundle without the states, or with a misshapen one, writes nothing
	c, before := filled(dst, "mamba2")
	_, err = ApplyRecurrent(ctx, c, before.Number, 0, "nope", b)
	require.ErrorIs(t, err, ErrBundle)
	assert.Contains(t, err.Error(), "nope/layer/0/")
	bad := Bundle{Names: append([]string(nil), b.Names...), Tensors: append([]tensor.Tensor(nil), b.Tensors...)}
	for i, n := range bad.Names {
		if n == RecurrentName("mamba2", 1, "ssm") {
			bad.Tensors[i] = randomTensor(r, tensor.Float32, 1, 7)
		}
	}
	_, err = ApplyRecurrent(ctx, c, before.Number, 0, "mamba2", bad)
	require.ErrorIs(t, err, ErrBundle)
	assert.Contains(t, err.Error(), "mamba2/layer/1/ssm")
	now, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, before.Number, now.Number, "nothing was written")
	_, err = RecurrentRow("x", before, 3)
	require.ErrorIs(t, err, ErrBundle)
}
