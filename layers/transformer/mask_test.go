package transformer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewMask(t *testing.T) {
	shape, data := []int{2, 3}, []bool{true, false, true, false, false, true}
	m, err := NewMask(shape, data)
	require.NoError(t, err)
	shape[0], data[0] = 9, false
	assert.Equal(t, []int{2, 3}, m.Shape, "NewMask copies its inputs")
	assert.True(t, m.At(0, 0))
	assert.False(t, m.At(0, 1))
	assert.True(t, m.At(1, 2))
	assert.False(t, m.IsZero())
	assert.Equal(t, 2, m.Rank())

	_, err = NewMask([]int{2, 3}, []bool{true})
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "mask of shape [2 3] needs 6 values, got 1")
	_, err = NewMask([]int{2, -1}, nil)
	require.ErrorIs(t, err, ErrShape)
	assert.Contains(t, err.Error(), "dimension 1 of mask shape [2 -1] is negative")

	assert.Panics(t, func() { m.At(2, 0) })
	assert.Panics(t, func() { m.At(0) })
	assert.True(t, Mask{}.IsZero())
}

func TestMaskString(t *testing.T) {
	cases := []struct {
		name string
		m    Mask
		want string
	}{
		{"zero", Mask{}, "<no mask>"},
		{"causal 3", CausalMask(3), "x..\nxx.\nxxx"},
		{"causal 0", CausalMask(0), ""},
		{"2-D rows", maskFromRows(t, []int{2, 4}, "xx..", "..xx"), "xx..\n..xx"},
		{"4-D blocks per batch row", maskFromRows(t, []int{2, 1, 2, 3}, "x..", "xx.", ".x.", ".xx"), "x..\nxx.\n\n.x.\n.xx"},
		{"1-D", maskFromRows(t, []int{3}, "x.x"), "x.x"},
		{"invalid", Mask{Shape: []int{2}, Data: []bool{true}}, "<invalid mask: shape [2], 1 values>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, tc.m.String()) })
	}
}

func TestCausalMask(t *testing.T) {
	m := CausalMask(4)
	assert.Equal(t, []int{1, 1, 4, 4}, m.Shape)
	for i := 0; i < 4; i++ {
		for j := 0; j < 4; j++ {
			assert.Equal(t, j <= i, m.At(0, 0, i, j), "(%d,%d)", i, j)
		}
	}
	assert.Panics(t, func() { CausalMask(-1) })
	assert.True(t, m.Equal(CausalMask(4)))
	assert.False(t, m.Equal(CausalMask(3)))
}
