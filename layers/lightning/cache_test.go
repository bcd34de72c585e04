package lightning

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

func TestInitCache(t *testing.T) {
	c, err := Init(3, testMeta(t, 2, 4, 8), tensor.BFloat16)
	require.NoError(t, err)
	require.Equal(t, 3, c.Len())
	for l := 0; l < 3; l++ {
		v := view(t, c, l)
		assert.False(t, v.HasKeyValue(), "key_value starts as None")
		assert.Equal(t, tensor.BFloat16, v.DType())
		li, ok := v.LayerIndex()
		require.True(t, ok)
		assert.Equal(t, l, li)
	}
	_, err = Init(-1, Metadata{}, tensor.Float32)
	require.ErrorIs(t, err, ErrMetadata)
	_, err = Init(1, Metadata{}, 0)
	require.ErrorIs(t, err, ErrDType)
	_, err = Init(1, Metadata{HeadDim: Ptr(-1)}, tensor.Float32)
	require.ErrorIs(t, err, ErrMetadata)

	e := InitEmpty(2)
	assert.Equal(t, 2, e.Len())
	assert.True(t, view(t, e, 1).IsEmpty())
	assert.Panics(t, func() { InitEmpty(-1) })
}

func TestCacheUpdate(t *testing.T) {
	c, err := Init(2, testMeta(t, 1, 1, 1), tensor.Float32)
	require.NoError(t, err)
	one := kv4(t, []float64{2}, 1, 1, 1, 1)
	u, err := c.Update(1, one, one, []float64{0})
	require.NoError(t, err)
	assert.Equal(t, []float64{4}, view(t, u, 1).KeyValue().Float64s())
	assert.False(t, view(t, u, 0).HasKeyValue(), "other layer unchanged")
	assert.False(t, view(t, c, 1).HasKeyValue(), "original cache unchanged")
	assert.Equal(t, view(t, c, 0), view(t, u, 0))

	u2, err := u.UpdateKeyValue(0, testkit.Constant(tensor.Float64, 3, 1, 1, 1, 1))
	require.NoError(t, err)
	assert.Equal(t, []float64{3}, view(t, u2, 0).KeyValue().Float64s())
	assert.False(t, view(t, u, 0).HasKeyValue())

	r, err := u2.Reset()
	require.NoError(t, err)
	for l := 0; l < 2; l++ {
		assert.False(t, view(t, r, l).HasKeyValue())
	}
	rl, err := u2.ResetLayer(1)
	require.NoError(t, err)
	assert.False(t, view(t, rl, 1).HasKeyValue())
	assert.True(t, view(t, rl, 0).HasKeyValue())
	rr, err := u2.ResetRows(0)
	require.NoError(t, err)
	assert.Equal(t, []float64{0}, view(t, rr, 0).KeyValue().Float64s())
	assert.Equal(t, []float64{0}, view(t, rr, 1).KeyValue().Float64s())

	_, err = u.Update(0, one, one, []float64{0, 1})
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "layer 0:")
}

func TestCacheLayerErrors(t *testing.T) {
	c, err := Init(2, Metadata{}, tensor.Float32)
	require.NoError(t, err)
	one := kv4(t, []float64{1}, 1, 1, 1, 1)
	for _, layer := range []int{2, -1} {
		_, err := c.Update(layer, one, one, []float64{0})
		require.ErrorIs(t, err, ErrOutOfRange)
		assert.Contains(t, err.Error(), "list index out of range")
		assert.Contains(t, err.Error(), "(cache has layers 0..1)")
		_, err = c.UpdateKeyValue(layer, one)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.ResetLayer(layer)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.View(layer)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.WithView(layer, View{})
		require.ErrorIs(t, err, ErrOutOfRange)
	}
	e := InitEmpty(2)
	_, err = e.Update(0, one, one, []float64{0})
	require.ErrorIs(t, err, ErrEmpty)
	assert.Contains(t, err.Error(), "Cache view for layer 0 is None")
	_, err = e.UpdateKeyValue(1, one)
	assert.Contains(t, err.Error(), "Cache view for layer 1 is None")
	r, err := e.Reset()
	require.NoError(t, err)
	assert.True(t, view(t, r, 0).IsEmpty(), "empty views stay empty")
}

func TestCacheInsert(t *testing.T) {
	dst, err := Init(2, testMeta(t, 2, 1, 1), tensor.Float32)
	require.NoError(t, err)
	src, err := Init(2, testMeta(t, 1, 1, 1), tensor.Float32)
	require.NoError(t, err)
	src, err = src.UpdateKeyValue(1, testkit.Constant(tensor.Float32, 7, 1, 1, 1, 1))
	require.NoError(t, err)
	got, err := dst.Insert(src, 1)
	require.NoError(t, err)
	assert.False(t, view(t, got, 0).HasKeyValue())
	assert.Equal(t, []float64{0, 7}, view(t, got, 1).KeyValue().Float64s())
	_, err = dst.Insert(InitEmpty(2), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(InitEmpty(1), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(src, 2)
	require.ErrorIs(t, err, ErrOutOfRange)
}

func TestCacheString(t *testing.T) {
	c, err := Init(2, testMeta(t, 1, 1, 1), tensor.Float32)
	require.NoError(t, err)
	c, err = c.UpdateKeyValue(1, testkit.Constant(tensor.Float32, 1, 1, 1, 1, 1))
	require.NoError(t, err)
	c, err = c.WithView(0, View{})
	require.NoError(t, err)
	s := c.String()
	for _, want := range []string{"LightningCache", "LightningCacheView", "key_value"} {
		assert.Contains(t, s, want)
	}
	assert.Equal(t, "LightningCache(views=[None, LightningCacheView(key_value=float32[1 1 1 1], layer_index=1)])", s)
}
