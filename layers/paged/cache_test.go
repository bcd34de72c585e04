package paged

import (
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCache(t *testing.T) {
	meta := testMeta(2, 8, 4, 3)
	c, err := Init(meta, tensor.Float32)
	require.NoError(t, err)
	require.Equal(t, 2, c.Len())
	for i := range 2 {
		v, err := c.View(i)
		require.NoError(t, err)
		assert.Equal(t, i, v.LayerIndex())
		assert.Equal(t, meta, v.Metadata())
	}
	for _, i := range []int{-1, 2} {
		_, err := c.View(i)
		require.ErrorIs(t, err, ErrOutOfRange)
		assert.Contains(t, err.Error(), "of a cache of 2 layers")
	}

	v1, err := c.View(1)
	require.NoError(t, err)
	k := kvOf(t, tensor.Float32, 2, 2, 3, 1)
	v1, err = v1.WritePrefill(k, k, StepMetadata{PrefillLength: 2, PrefillPageTable: []int32{3}})
	require.NoError(t, err)
	c2, err := c.WithView(1, v1)
	require.NoError(t, err)
	got, err := c2.View(1)
	require.NoError(t, err)
	assert.True(t, got.KeyPages().Equal(v1.KeyPages()))
	// The original cache still holds the unwritten view: a sibling written
	// from it at the same positions leaves c2's layer untouched.
	old, err := c.View(1)
	require.NoError(t, err)
	other := kvOf(t, tensor.Float32, 2, 2, 3, 7)
	sibling, err := old.WritePrefill(other, other, StepMetadata{PrefillLength: 2, PrefillPageTable: []int32{3}})
	require.NoError(t, err)
	gotK, _, err := got.Gather([]int32{3}, 2)
	require.NoError(t, err)
	assert.Equal(t, k.Float32s(), gotK.Float32s(), "WithView leaves the original cache's view as it was")
	sibK, _, err := sibling.Gather([]int32{3}, 2)
	require.NoError(t, err)
	assert.Equal(t, other.Float32s(), sibK.Float32s())
	l0, err := c2.View(0)
	require.NoError(t, err)
	assert.Equal(t, make([]float32, 2*8*4*3), l0.KeyPages().Float32s(), "layers do not share writes")

	_, err = c.WithView(0, v1)
	require.ErrorIs(t, err, ErrOutOfRange)
	assert.Contains(t, err.Error(), "view of layer 1 set as layer 0")
	_, err = c.WithView(2, v1)
	require.ErrorIs(t, err, ErrOutOfRange)

	_, err = Init(testMeta(2, 1, 4, 3), tensor.Float32)
	require.ErrorIs(t, err, ErrInvalidMetadata)
	_, err = Init(meta, 0)
	require.ErrorIs(t, err, ErrDType)
}

func TestInitEmpty(t *testing.T) {
	c, err := InitEmpty(3)
	require.NoError(t, err)
	require.Equal(t, 3, c.Len())
	for i := range 3 {
		v, err := c.View(i)
		require.NoError(t, err)
		assert.True(t, v.IsZero())
	}
	v, err := NewView(testMeta(2, 8, 4, 3), tensor.Float32, 1)
	require.NoError(t, err)
	c2, err := c.WithView(1, v)
	require.NoError(t, err)
	got, err := c2.View(1)
	require.NoError(t, err)
	assert.False(t, got.IsZero())
	still, err := c.View(1)
	require.NoError(t, err)
	assert.True(t, still.IsZero())
	c3, err := c2.WithView(1, View{})
	require.NoError(t, err)
	cleared, err := c3.View(1)
	require.NoError(t, err)
	assert.True(t, cleared.IsZero())

	_, err = InitEmpty(-1)
	require.ErrorIs(t, err, ErrOutOfRange)
}
