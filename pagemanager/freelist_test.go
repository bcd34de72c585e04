package pagemanager

import (
	"math/bits"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkList checks the list's links, count and membership bits against
// each other, and returns its pages head first.
func checkList(t *testing.T, l *freeList) []int32 {
	t.Helper()
	fwd := l.appendTo(nil)
	require.Len(t, fwd, l.len())
	var back []int32
	for i := l.tail; i != none; i = l.prev[i] {
		back = append(back, i)
	}
	slices.Reverse(back)
	require.Equal(t, fwd, back, "backward links")
	members := 0
	for _, w := range l.in {
		members += bits.OnesCount64(w)
	}
	require.Equal(t, l.len(), members, "membership bits")
	for _, p := range fwd {
		require.True(t, l.contains(p))
	}
	return fwd
}

func TestFreeList(t *testing.T) {
	l := newFreeList(70) // more than one bitset word
	assert.Empty(t, checkList(t, &l))
	_, ok := l.popFront()
	assert.False(t, ok)

	for _, p := range []int32{3, 69, 0, 64, 7} {
		l.pushBack(p)
	}
	assert.Equal(t, []int32{3, 69, 0, 64, 7}, checkList(t, &l))

	l.remove(0) // middle
	assert.Equal(t, []int32{3, 69, 64, 7}, checkList(t, &l))
	l.remove(3) // head
	assert.Equal(t, []int32{69, 64, 7}, checkList(t, &l))
	l.remove(7) // tail
	assert.Equal(t, []int32{69, 64}, checkList(t, &l))
	assert.False(t, l.contains(7))

	p, ok := l.popFront()
	require.True(t, ok)
	assert.Equal(t, int32(69), p)
	l.pushBack(3)
	l.pushBack(69)
	assert.Equal(t, []int32{64, 3, 69}, checkList(t, &l))
	for _, want := range []int32{64, 3, 69} {
		p, ok := l.popFront()
		require.True(t, ok)
		assert.Equal(t, want, p)
	}
	assert.Empty(t, checkList(t, &l))
	l.pushBack(5) // the list works again after being emptied
	assert.Equal(t, []int32{5}, checkList(t, &l))

	assert.Panics(t, func() { l.pushBack(5) }, "push twice")
	assert.Panics(t, func() { l.remove(6) }, "remove a page not in the list")
}
