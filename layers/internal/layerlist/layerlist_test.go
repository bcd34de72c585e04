package layerlist

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	errOutOfRange   = errors.New("test: out of range")
	errEmpty        = errors.New("test: empty view")
	errIncompatible = errors.New("test: incompatible")
	ops             = Ops[tview]{OutOfRange: errOutOfRange, Empty: errEmpty, Incompatible: errIncompatible}
)

// tview is a test view; the zero tview (no name) is the empty view.
type tview struct{ name string }

func (v tview) IsEmpty() bool { return v.name == "" }

func (v tview) String() string {
	if v.IsEmpty() {
		return "None"
	}
	return v.name
}

// abc is a list of three layers whose layer 1 is empty.
func abc() []tview { return []tview{{"a"}, {}, {"c"}} }

func TestMake(t *testing.T) {
	views, err := Make(3, func(l int) (tview, error) { return tview{string(rune('x' + l))}, nil })
	require.NoError(t, err)
	assert.Equal(t, []tview{{"x"}, {"y"}, {"z"}}, views)

	none, err := Make(0, func(int) (tview, error) { panic("not called") })
	require.NoError(t, err)
	assert.Empty(t, none)

	boom := errors.New("boom")
	var calls []int
	_, err = Make(4, func(l int) (tview, error) {
		calls = append(calls, l)
		if l == 1 {
			return tview{}, boom
		}
		return tview{"v"}, nil
	})
	assert.Same(t, boom, err, "returned as it is")
	assert.Equal(t, []int{0, 1}, calls, "stops at the first error")
}

func TestCheckAndGet(t *testing.T) {
	views := abc()
	for _, tc := range []struct {
		i    int
		want tview
		msg  string
	}{
		{0, tview{"a"}, ""},
		{1, tview{}, ""},
		{2, tview{"c"}, ""},
		{-1, tview{}, "test: out of range: list index out of range: layer -1 (cache has layers 0..2)"},
		{3, tview{}, "test: out of range: list index out of range: layer 3 (cache has layers 0..2)"},
	} {
		got, err := ops.Get(views, tc.i)
		if tc.msg == "" {
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			assert.NoError(t, ops.Check(views, tc.i))
			continue
		}
		require.ErrorIs(t, err, errOutOfRange)
		assert.EqualError(t, err, tc.msg)
		assert.EqualError(t, ops.Check(views, tc.i), tc.msg)
	}
	assert.EqualError(t, ops.Check(nil, 0), "test: out of range: list index out of range: layer 0 (cache has layers 0..-1)")
}

func TestWith(t *testing.T) {
	views := abc()
	got, err := ops.With(views, 1, tview{"b"})
	require.NoError(t, err)
	assert.Equal(t, []tview{{"a"}, {"b"}, {"c"}}, got)
	got, err = ops.With(views, 0, tview{})
	require.NoError(t, err)
	assert.Equal(t, []tview{{}, {}, {"c"}}, got, "a view may be set empty")
	assert.Equal(t, abc(), views, "the input is unchanged")

	_, err = ops.With(views, 3, tview{"d"})
	require.ErrorIs(t, err, errOutOfRange)
}

func TestUpdate(t *testing.T) {
	views := abc()
	upper := func(v tview) (tview, error) { return tview{v.name + "!"}, nil }
	got, err := ops.Update(views, 2, upper)
	require.NoError(t, err)
	assert.Equal(t, []tview{{"a"}, {}, {"c!"}}, got)
	assert.Equal(t, abc(), views, "the input is unchanged")

	notCalled := func(tview) (tview, error) { panic("not called") }
	_, err = ops.Update(views, 1, notCalled)
	require.ErrorIs(t, err, errEmpty)
	assert.EqualError(t, err, "test: empty view: Cache view for layer 1 is None")
	_, err = ops.Update(views, -1, notCalled)
	require.ErrorIs(t, err, errOutOfRange)

	boom := errors.New("boom")
	_, err = ops.Update(views, 0, func(tview) (tview, error) { return tview{}, boom })
	require.ErrorIs(t, err, boom)
	assert.EqualError(t, err, "layer 0: boom")
}

func TestEach(t *testing.T) {
	views := abc()
	var seen []int
	got, err := ops.Each(views, func(l int, v tview) (tview, error) {
		seen = append(seen, l)
		return tview{v.name + v.name}, nil
	})
	require.NoError(t, err)
	assert.Equal(t, []tview{{"aa"}, {}, {"cc"}}, got)
	assert.Equal(t, []int{0, 2}, seen, "empty views are skipped")
	assert.Equal(t, abc(), views, "the input is unchanged")

	boom := errors.New("boom")
	_, err = ops.Each(views, func(l int, v tview) (tview, error) {
		if l == 2 {
			return tview{}, boom
		}
		return v, nil
	})
	require.ErrorIs(t, err, boom)
	assert.EqualError(t, err, "layer 2: boom")

	none, err := ops.Each(nil, func(int, tview) (tview, error) { panic("not called") })
	require.NoError(t, err)
	assert.Empty(t, none)
}

func TestInsert(t *testing.T) {
	views := abc()
	join := func(v, o tview) (tview, error) { return tview{v.name + "+" + o.name}, nil }
	got, err := ops.Insert(views, []tview{{"x"}, {}, {"z"}}, join)
	require.NoError(t, err)
	assert.Equal(t, []tview{{"a+x"}, {}, {"c+z"}}, got, "layer l pairs with layer l")
	assert.Equal(t, abc(), views, "the input is unchanged")

	for _, tc := range []struct {
		name  string
		other []tview
		msg   string
	}{
		{"fewer layers", []tview{{"x"}, {}}, "test: incompatible: Insert of a cache of 2 layers into one of 3 layers"},
		{"more layers", []tview{{"x"}, {}, {"z"}, {"w"}}, "test: incompatible: Insert of a cache of 4 layers into one of 3 layers"},
		{"empty only in other", []tview{{}, {}, {"z"}}, "test: incompatible: layer 0 is empty in only one of the caches"},
		{"empty only in views", []tview{{"x"}, {"y"}, {"z"}}, "test: incompatible: layer 1 is empty in only one of the caches"},
	} {
		_, err := ops.Insert(views, tc.other, join)
		require.ErrorIs(t, err, errIncompatible, tc.name)
		assert.EqualError(t, err, tc.msg, tc.name)
	}

	boom := errors.New("boom")
	_, err = ops.Insert(views, []tview{{"x"}, {}, {"z"}}, func(v, o tview) (tview, error) { return tview{}, boom })
	assert.EqualError(t, err, "layer 0: boom")
}

func TestString(t *testing.T) {
	assert.Equal(t, "DemoCache(views=[a, None, c])", String("DemoCache", abc()))
	assert.Equal(t, "DemoCache(views=[])", String[tview]("DemoCache", nil))
}
