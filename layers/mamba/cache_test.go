package mamba

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// basicCache is EasyDeL's fixture: 2 layers, batch 2, intermediate 64,
// state 16, kernel 4, float32.
func basicCache(t *testing.T) Cache {
	t.Helper()
	c, err := Init(testMeta(t, 2, 2, 64, 16, 4), tensor.Float32)
	require.NoError(t, err)
	return c
}

func TestInitCache(t *testing.T) {
	cases := []struct{ layers, b, i, n, k int }{{2, 2, 64, 16, 4}, {2, 1, 32, 8, 2}, {2, 4, 128, 32, 8}, {2, 8, 256, 64, 16}, {0, 1, 1, 1, 1}}
	for _, tc := range cases {
		c, err := Init(testMeta(t, tc.layers, tc.b, tc.i, tc.n, tc.k), tensor.Float32)
		require.NoError(t, err)
		require.Equal(t, tc.layers, c.Len())
		for l := 0; l < c.Len(); l++ {
			v := view(t, c, l)
			assert.Equal(t, []int{tc.b, tc.i, tc.k}, v.ConvStates().Shape())
			assert.Equal(t, []int{tc.b, tc.i, tc.n}, v.SSMStates().Shape())
			li, ok := v.LayerIndex()
			assert.True(t, ok)
			assert.Equal(t, l, li)
		}
	}
	_, err := Init(testMeta(t, 2, 2, 64, 16, 4), 0)
	require.ErrorIs(t, err, ErrDType)
	_, err = Init(Metadata{NumHiddenLayers: 1}, tensor.Float32)
	require.ErrorIs(t, err, ErrMetadata)
}

func TestCacheDTypes(t *testing.T) {
	for _, d := range []tensor.DType{tensor.Float32, tensor.Float16, tensor.BFloat16, tensor.Float64} {
		c, err := Init(testMeta(t, 2, 2, 64, 16, 4), d)
		require.NoError(t, err)
		for l := 0; l < 2; l++ {
			assert.Equal(t, d, view(t, c, l).ConvStates().DType())
			assert.Equal(t, d, view(t, c, l).SSMStates().DType())
		}
	}
}

func TestCacheUpdateConvState(t *testing.T) {
	// EasyDeL's test_update_conv_state: cp=1 on a zero cache.
	c := basicCache(t)
	u, err := c.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 64), 1)
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(512, 0), view(t, c, 0).ConvStates().Float64s(), "original cache unchanged")
	assert.Equal(t, testkit.Filled(128, 1), testkit.Column(view(t, u, 0).ConvStates(), 1))
	for _, k := range []int{0, 2, 3} {
		assert.Equal(t, testkit.Filled(128, 0), testkit.Column(view(t, u, 0).ConvStates(), k))
	}
	assert.Equal(t, testkit.Filled(512, 0), view(t, u, 1).ConvStates().Float64s(), "other layer unchanged")
	assert.Equal(t, view(t, c, 1), view(t, u, 1), "other layer is the same view")

	u, err = c.UpdateConvStatePositions(1, testkit.Constant(tensor.Float32, 2, 2, 64, 1), []int32{2})
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(128, 2), testkit.Column(view(t, u, 1).ConvStates(), 2))
	assert.Equal(t, testkit.Filled(512, 0), view(t, u, 0).ConvStates().Float64s())
}

func TestCacheUpdateSSMState(t *testing.T) {
	c := basicCache(t)
	u, err := c.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 64, 16))
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(2048, 0), view(t, c, 0).SSMStates().Float64s(), "original unchanged")
	assert.Equal(t, testkit.Filled(2048, 1), view(t, u, 0).SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(2048, 0), view(t, u, 1).SSMStates().Float64s(), "other layer unchanged")
}

func TestCacheReset(t *testing.T) {
	c := basicCache(t)
	u, err := c.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 64), 0)
	require.NoError(t, err)
	u, err = u.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 64, 16))
	require.NoError(t, err)
	u, err = u.UpdateSSMState(1, testkit.Constant(tensor.Float32, 2, 2, 64, 16))
	require.NoError(t, err)

	r, err := u.Reset()
	require.NoError(t, err)
	require.Equal(t, 2, r.Len())
	for l := 0; l < 2; l++ {
		assert.Equal(t, testkit.Filled(512, 0), view(t, r, l).ConvStates().Float64s())
		assert.Equal(t, testkit.Filled(2048, 0), view(t, r, l).SSMStates().Float64s())
		assert.Equal(t, []int{2, 64, 16}, view(t, r, l).SSMStates().Shape())
	}
	assert.Equal(t, testkit.Filled(128, 1), testkit.Column(view(t, u, 0).ConvStates(), 0), "reset does not change its receiver")

	one, err := u.ResetLayer(1)
	require.NoError(t, err)
	assert.Equal(t, testkit.Filled(2048, 0), view(t, one, 1).SSMStates().Float64s())
	assert.Equal(t, testkit.Filled(2048, 1), view(t, one, 0).SSMStates().Float64s())

	rows, err := u.ResetRows(0)
	require.NoError(t, err)
	assert.Equal(t, append(testkit.Filled(1024, 0), testkit.Filled(1024, 2)...), view(t, rows, 1).SSMStates().Float64s())
	assert.True(t, view(t, rows, 1).SSMStates().SharesChunk(1, view(t, u, 1).SSMStates(), 1))

	// Empty views stay empty.
	mixed, err := u.WithView(1, View{})
	require.NoError(t, err)
	r, err = mixed.Reset()
	require.NoError(t, err)
	assert.True(t, view(t, r, 1).IsEmpty())
	assert.Equal(t, testkit.Filled(2048, 0), view(t, r, 0).SSMStates().Float64s())
	r, err = InitEmpty(2).Reset()
	require.NoError(t, err)
	assert.Equal(t, 2, r.Len())
}

func TestCacheLayerErrors(t *testing.T) {
	c := basicCache(t)
	ones := testkit.Constant(tensor.Float32, 1, 2, 64)
	ssm := testkit.Constant(tensor.Float32, 1, 2, 64, 16)
	for _, layer := range []int{2, -1, 100} {
		_, err := c.UpdateConvState(layer, ones, 0)
		require.ErrorIs(t, err, ErrOutOfRange, "layer %d", layer)
		assert.Contains(t, err.Error(), "list index out of range")
		assert.Contains(t, err.Error(), "(cache has layers 0..1)")
		_, err = c.UpdateSSMState(layer, ssm)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.ResetLayer(layer)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.View(layer)
		require.ErrorIs(t, err, ErrOutOfRange)
		_, err = c.WithView(layer, View{})
		require.ErrorIs(t, err, ErrOutOfRange)
	}
	_, err := c.UpdateConvState(2, ones, 0)
	assert.Contains(t, err.Error(), "layer 2")

	// A bad input names the layer.
	_, err = c.UpdateSSMState(1, ones)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "layer 1:")
}

func TestEmptyCache(t *testing.T) {
	e := InitEmpty(2)
	assert.Equal(t, 2, e.Len())
	for l := 0; l < 2; l++ {
		assert.True(t, view(t, e, l).IsEmpty())
	}
	cases := []struct {
		name string
		fn   func() (Cache, error)
	}{
		{"conv", func() (Cache, error) { return e.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 64), 0) }},
		{"conv positions", func() (Cache, error) {
			return e.UpdateConvStatePositions(0, testkit.Constant(tensor.Float32, 1, 2, 64, 1), []int32{0})
		}},
		{"ssm", func() (Cache, error) { return e.UpdateSSMState(0, testkit.Constant(tensor.Float32, 1, 2, 4, 16)) }},
		{"reset layer", func() (Cache, error) { return e.ResetLayer(0) }},
	}
	for _, tc := range cases {
		_, err := tc.fn()
		require.ErrorIs(t, err, ErrEmpty, tc.name)
		assert.Contains(t, err.Error(), "Cache view for layer 0 is None", tc.name)
	}
	assert.Panics(t, func() { InitEmpty(-1) })
	assert.Equal(t, 0, InitEmpty(0).Len())
}

func TestCacheWithViewDoesNotChangeReceiver(t *testing.T) {
	c := basicCache(t)
	v0 := view(t, c, 0)
	u, err := c.WithView(0, View{})
	require.NoError(t, err)
	assert.True(t, view(t, u, 0).IsEmpty())
	assert.Equal(t, v0, view(t, c, 0))
	w, err := u.WithView(0, v0)
	require.NoError(t, err)
	_, err = w.UpdateConvState(0, testkit.Constant(tensor.Float32, 1, 2, 64), 3)
	require.NoError(t, err)
}

func TestCacheInsert(t *testing.T) {
	dst, err := Init(testMeta(t, 2, 4, 3, 2, 4), tensor.Float32)
	require.NoError(t, err)
	src, err := Init(testMeta(t, 2, 1, 3, 2, 4), tensor.Float32)
	require.NoError(t, err)
	src, err = src.UpdateSSMState(1, testkit.Constant(tensor.Float32, 5, 1, 3, 2))
	require.NoError(t, err)
	got, err := dst.Insert(src, 2)
	require.NoError(t, err)
	assert.Equal(t, append(append(testkit.Filled(12, 0), testkit.Filled(6, 5)...), testkit.Filled(6, 0)...), view(t, got, 1).SSMStates().Float64s())
	assert.True(t, view(t, got, 1).SSMStates().SharesChunk(2, view(t, src, 1).SSMStates(), 0))
	assert.Equal(t, testkit.Filled(24, 0), view(t, dst, 1).SSMStates().Float64s())

	_, err = dst.Insert(InitEmpty(3), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(InitEmpty(2), 0)
	require.ErrorIs(t, err, ErrIncompatible)
	_, err = dst.Insert(src, 4)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "layer 0:")
}

func TestCacheString(t *testing.T) {
	c := basicCache(t)
	s := c.String()
	for _, want := range []string{"MambaCache", "MambaCacheView", "conv_states", "ssm_states"} {
		assert.Contains(t, s, want)
	}
	assert.Equal(t, "MambaCache(views=[MambaCacheView(conv_states=float32[2 64 4], ssm_states=float32[2 64 16], layer_index=0), "+
		"MambaCacheView(conv_states=float32[2 64 4], ssm_states=float32[2 64 16], layer_index=1)])", s)
	assert.Equal(t, "MambaCache(views=[None, None])", InitEmpty(2).String())
}
