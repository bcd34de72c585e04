package mamba2

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// easyCache is EasyDeL's test cache: 3 layers of the easy dims, float32.
func easyCache(t *testing.T) Cache {
	t.Helper()
	c, err := Init(testMeta(t, easy), tensor.Float32)
	require.NoError(t, err)
	return c
}

func TestInitCache(t *testing.T) {
	c := easyCache(t)
	require.Equal(t, 3, c.Len())
	for l := 0; l < 3; l++ {
		v := view(t, c, l)
		assert.Equal(t, []int{2, 96, 4}, v.ConvStates().Shape())
		assert.Equal(t, []int{2, 4, 16, 16}, v.SSMStates().Shape())
		li, ok := v.LayerIndex()
		require.True(t, ok)
		assert.Equal(t, l, li)
	}
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		c, err := Init(testMeta(t, easy), d)
		require.NoError(t, err)
		assert.Equal(t, d, view(t, c, 0).ConvStates().DType())
		assert.Equal(t, d, view(t, c, 0).SSMStates().DType())
	}
	_, err := Init(testMeta(t, easy), 0)
	require.ErrorIs(t, err, ErrDType)
	_, err = Init(Metadata{}, tensor.Float32)
	require.ErrorIs(t, err, ErrMetadata)
	z := easy
	z.layers = 0
	c, err = Init(testMeta(t, z), tensor.Float32)
	require.NoError(t, err)
	assert.Equal(t, 0, c.Len())
}

func TestCacheUpdates(t *testing.T) {
	// EasyDeL's test_mamba2_cache_updates, plus: the original cache and the
	// other layers are unchanged.
	c := easyCache(t)
	u, err := c.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 96), 1)
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(192, 1), testkit.Column(view(t, u, 0).ConvStates(), 1))
	assert.Equal(t, testkit.Filled(192, 0), testkit.Column(view(t, u, 0).ConvStates(), 0))
	assert.Equal(t, testkit.Filled(768, 0), view(t, c, 0).ConvStates().Float64s(), "original unchanged")
	assert.Equal(t, testkit.Filled(768, 0), view(t, u, 1).ConvStates().Float64s(), "other layer unchanged")

	u, err = c.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 4, 16, 16))
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(2048, 1), view(t, u, 0).SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(2048, 0), view(t, c, 0).SSMStates().Float64s(), "original unchanged")
	assert.Equal(t, testkit.Filled(2048, 0), view(t, u, 2).SSMStates().Float64s(), "other layer unchanged")

	u, err = c.UpdateConvStatePositions(2, testkit.Constant(tensor.Float32, 3, 2, 96, 4), testkit.Arange(4))
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(768, 3), view(t, u, 2).ConvStates().Float64s())

	_, err = c.UpdateSSMState(1, testkit.Constant(tensor.Float32, 1, 2, 4, 16))
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "layer 1:")
}

func TestCacheReset(t *testing.T) {
	// EasyDeL's test_mamba2_cache_reset.
	c := easyCache(t)
	c, err := c.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 96), 1)
	require.NoError(t, err)
	c, err = c.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 4, 16, 16))
	require.NoError(t, err)
	c, err = c.UpdateSeq(1)
	require.NoError(t, err)
	r, err := c.Reset()
	require.NoError(t, err)
	for l := 0; l < 3; l++ {
		assert.Equal(t, testkit.Filled(768, 0), view(t, r, l).ConvStates().Float64s())
		assert.Equal(t, testkit.Filled(2048, 0), view(t, r, l).SSMStates().Float64s())
		assert.Equal(t, 0, view(t, r, l).SeqlenOffset())
	}
	assert.Equal(t, testkit.Filled(2048, 1), view(t, c, 0).SSMStates().Float64s(), "receiver unchanged")
	assert.Equal(t, 1, c.SeqlenOffset())

	one, err := c.ResetLayer(0)
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(2048, 0), view(t, one, 0).SSMStates().Float64s())
	assert.Equal(t, 1, view(t, one, 1).SeqlenOffset())

	rows, err := c.ResetRows(1)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(1024, 1), testkit.Filled(1024, 0)...), view(t, rows, 0).SSMStates().Float64s())
	assert.Equal(t, []int32{1, 0}, view(t, rows, 2).Positions())

	mixed, err := c.WithView(2, View{})
	require.NoError(t, err)
	r, err = mixed.Reset()
	require.NoError(t, err)
	assert.True(t, view(t, r, 2).IsEmpty())
}

func TestCacheUpdateSeq(t *testing.T) {
	c := easyCache(t)
	c, err := c.WithView(1, View{})
	require.NoError(t, err)
	u, err := c.UpdateSeq(1)
	require.NoError(t, err)
	u, err = u.UpdateSeq(1)
	require.NoError(t, err)
	assert.Equal(t, 2, u.SeqlenOffset())
	for _, l := range []int{0, 2} {
		assert.Equal(t, 2, view(t, u, l).SeqlenOffset())
		assert.Equal(t, []int32{2, 2}, view(t, u, l).Positions())
	}
	assert.True(t, view(t, u, 1).IsEmpty(), "empty views are skipped")
	assert.Equal(t, 0, c.SeqlenOffset(), "receiver unchanged")
	assert.Equal(t, 0, InitEmpty(2).SeqlenOffset())
	e, err := InitEmpty(2).UpdateSeq(1)
	require.NoError(t, err)
	assert.Equal(t, 2, e.Len())
	_, err = c.UpdateSeq(-1)
	require.ErrorIs(t, err, ErrOutOfRange)
}

func TestEmptyCacheAndLayerErrors(t *testing.T) {
	// EasyDeL's test_empty_cache_initialization and test_invalid_layer_access.
	e := InitEmpty(3)
	require.Equal(t, 3, e.Len())
	for l := 0; l < 3; l++ {
		assert.True(t, view(t, e, l).IsEmpty())
	}
	_, err := e.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 64), 1)
	require.ErrorIs(t, err, ErrEmpty)
	assert.Contains(t, err.Error(), "Cache view for layer 0 is None")
	_, err = e.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 4, 16, 16))
	require.ErrorIs(t, err, ErrEmpty)
	assert.Contains(t, err.Error(), "Cache view for layer 0 is None")
	_, err = e.UpdateConvStatePositions(2, testkit.Constant(tensor.Float32, 1, 2, 64, 1), []int32{0})
	assert.Contains(t, err.Error(), "Cache view for layer 2 is None")
	_, err = e.ResetLayer(1)
	require.ErrorIs(t, err, ErrEmpty)

	c := easyCache(t)
	for _, layer := range []int{3, -1} {
		_, err = c.UpdateConvState(layer, testkit.Constant(tensor.Float32, 1, 2, 96), 1)
		require.ErrorIs(t, err, ErrOutOfRange)
		assert.Contains(t, err.Error(), "list index out of range")
		_, err = c.UpdateSSMState(layer, testkit.Constant(tensor.Float32, 1, 2, 4, 16, 16))
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.View(layer)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.WithView(layer, View{})
		require.ErrorIs(t, err, ErrOutOfRange)
	}
	_, err = c.UpdateConvState(3, testkit.Constant(tensor.Float32, 1, 2, 96), 1)
	assert.Contains(t, err.Error(), "layer 3 (cache has layers 0..2)")
	assert.Panics(t, func() { InitEmpty(-1) })
}

func TestCacheInsert(t *testing.T) {
	d := small
	d.layers, d.b = 2, 3
	dst, err := Init(testMeta(t, d), tensor.Float32)
	require.NoError(t, err)
	s := small
	s.layers, s.b = 2, 1
	src, err := Init(testMeta(t, s), tensor.Float32)
	require.NoError(t, err)
	src, err = src.UpdateSSMState(1, testkit.Constant(tensor.Float32, 4, 1, 1, 2, 1))
	require.NoError(t, err)
	got, err := dst.Insert(src, 1)
	require.NoError(t, err)
	assert.Equal(t, []float64{0, 0, 4, 4, 0, 0}, view(t, got, 1).SSMStates().Float64s())
	assert.True(t, view(t, got, 1).SSMStates().SharesChunk(1, view(t, src, 1).SSMStates(), 0))
	_, err = dst.Insert(InitEmpty(2), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(src, 3)
	require.ErrorIs(t, err, ErrOutOfRange)
}

func TestCacheString(t *testing.T) {
	// EasyDeL's test_cache_string_representation.
	c, err := Init(testMeta(t, dims{layers: 2, b: 2, i: 64, h: 4, p: 16, n: 16, k: 4, g: 1}), tensor.Float32)
	require.NoError(t, err)
	s := c.String()
	for _, want := range []string{"Mamba2Cache", "Mamba2CacheView", "conv_states", "ssm_states"} {
		assert.Contains(t, s, want)
	}
	assert.Equal(t, "Mamba2Cache(views=[None])", InitEmpty(1).String())
}
