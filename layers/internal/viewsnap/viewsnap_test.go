package viewsnap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

var (
	errSnap  = errors.New("test: bad snapshot")
	errShape = errors.New("test: bad shape")
)

type testMeta struct {
	Rows  int     `json:"rows"`
	Scale float64 `json:"scale"`
}

// testView is a view with one tensor, one int32 array and one string; the
// zero value is the empty view.
type testView struct {
	meta  testMeta
	layer *int
	data  tensor.Tensor
	pos   []int32
	note  string
}

func (v testView) IsEmpty() bool { return v.data.IsZero() }

var codec = Codec[testView]{
	ViewFormat:  "test.View/v1",
	CacheFormat: "test.Cache/v1",
	Err:         errSnap,
	Fields:      []string{"metadata", "layer_index", "data", "pos", "note"},
	Put: func(e Entry, v testView) error {
		if err := e.SetMetadata(v.meta); err != nil {
			return err
		}
		if v.layer != nil {
			e.SetLayerIndex(*v.layer, true)
		} else {
			e.SetLayerIndex(-1, false)
		}
		e.SetTensor("data", v.data)
		e.SetInt32s("pos", v.pos)
		if v.note != "" {
			e.SetMeta("note", v.note)
		}
		return nil
	},
	Get: func(e Entry) (testView, error) {
		var v testView
		if err := e.Metadata(&v.meta); err != nil {
			return testView{}, err
		}
		var err error
		if v.layer, err = e.LayerIndex(); err != nil {
			return testView{}, err
		}
		v.data, _ = e.Tensor("data")
		v.pos = e.Int32s("pos")
		v.note, _ = e.Meta("note")
		if !v.data.HasShape(v.meta.Rows) || len(v.pos) != v.meta.Rows {
			return testView{}, fmt.Errorf("%w: data %s and %d positions for %d rows", errShape, v.data, len(v.pos), v.meta.Rows)
		}
		return v, nil
	},
}

func newView(t testing.TB, layer *int, rows int, note string) testView {
	t.Helper()
	data := make([]float64, rows)
	pos := make([]int32, rows)
	for i := range data {
		data[i] = float64(i) + 0.5
		pos[i] = int32(10 * i)
	}
	return testView{
		meta:  testMeta{Rows: rows, Scale: 0.25},
		layer: layer,
		data:  tensor.Must(tensor.FromFloat64s(tensor.Float32, data, rows)),
		pos:   pos,
		note:  note,
	}
}

func ptr(i int) *int { return &i }

// testCache is: a view with layer index 0, an empty view, a view without
// layer index and a note.
func testCache(t testing.TB) []testView {
	return []testView{newView(t, ptr(0), 2, ""), {}, newView(t, nil, 3, "n")}
}

func assertSame(t *testing.T, want, got testView) {
	t.Helper()
	require.Equal(t, want.IsEmpty(), got.IsEmpty())
	if want.IsEmpty() {
		return
	}
	assert.Equal(t, want.meta, got.meta)
	assert.Equal(t, want.layer, got.layer)
	assert.True(t, want.data.Equal(got.data))
	assert.Equal(t, want.pos, got.pos)
	assert.Equal(t, want.note, got.note)
}

func TestCacheRoundTrip(t *testing.T) {
	views := testCache(t)
	data, err := codec.MarshalCache(views)
	require.NoError(t, err)
	back, err := codec.UnmarshalCache(data)
	require.NoError(t, err)
	require.Len(t, back, len(views))
	for i := range views {
		assertSame(t, views[i], back[i])
	}
	again, err := codec.MarshalCache(back)
	require.NoError(t, err)
	assert.Equal(t, data, again, "encoding is deterministic")

	none, err := codec.MarshalCache(nil)
	require.NoError(t, err)
	back, err = codec.UnmarshalCache(none)
	require.NoError(t, err)
	assert.Empty(t, back)
}

func TestLayout(t *testing.T) {
	data, err := codec.MarshalCache(testCache(t))
	require.NoError(t, err)
	s, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{
		"format":              "test.Cache/v1",
		"views":               "3",
		"views.0.metadata":    `{"rows":2,"scale":0.25}`,
		"views.0.layer_index": "0",
		"views.1.empty":       "true",
		"views.2.metadata":    `{"rows":3,"scale":0.25}`,
		"views.2.note":        "n",
	}, s.Metadata)
	assert.Equal(t, []string{"views.0.data", "views.2.data"}, sortedKeys(s.Tensors))
	assert.Equal(t, map[string][]int32{"views.0.pos": {0, 10}, "views.2.pos": {0, 10, 20}}, s.Int32s)
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestViewRoundTrip(t *testing.T) {
	for _, v := range append(testCache(t), newView(t, ptr(-7), 1, "")) {
		data, err := codec.MarshalView(v)
		require.NoError(t, err)
		back, err := codec.UnmarshalView(data)
		require.NoError(t, err)
		assertSame(t, v, back)
	}
}

func TestFormatsAreDistinct(t *testing.T) {
	cache, err := codec.MarshalCache(testCache(t))
	require.NoError(t, err)
	_, err = codec.UnmarshalView(cache)
	require.ErrorIs(t, err, errSnap)
	assert.EqualError(t, err, `test: bad snapshot: format "test.Cache/v1", want "test.View/v1"`)

	view, err := codec.MarshalView(newView(t, nil, 1, ""))
	require.NoError(t, err)
	_, err = codec.UnmarshalCache(view)
	require.ErrorIs(t, err, errSnap)
	assert.EqualError(t, err, `test: bad snapshot: format "test.View/v1", want "test.Cache/v1"`)

	// A view snapshot must hold exactly one view.
	s, err := tensor.UnmarshalSnapshot(cache)
	require.NoError(t, err)
	s.Metadata["format"] = "test.View/v1"
	_, err = codec.UnmarshalView(mustBytes(t)(s.MarshalBinary()))
	require.ErrorIs(t, err, errSnap)
	assert.EqualError(t, err, "test: bad snapshot: a view snapshot holds 3 views, want 1")
}

// mustBytes returns a function that returns b, failing t on an error.
func mustBytes(t testing.TB) func(b []byte, err error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		require.NoError(t, err)
		return b
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good := mustBytes(t)(codec.MarshalCache(testCache(t)))
	edit := func(f func(s *tensor.Snapshot)) []byte { return testkit.EditSnapshot(t, good, f) }
	cases := []struct {
		name string
		data []byte
		msg  string
	}{
		{"empty input", nil, "test: bad snapshot: tensor: bad snapshot"},
		{"truncated", good[:len(good)-2], "test: bad snapshot: tensor: bad snapshot"},
		{"no format", edit(func(s *tensor.Snapshot) { delete(s.Metadata, "format") }), `test: bad snapshot: format "", want "test.Cache/v1"`},
		{"bad count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "x" }), `test: bad snapshot: views count "x" (want 0..7)`},
		{"negative count", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "-1" }), `test: bad snapshot: views count "-1" (want 0..7)`},
		{"count past the entries", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "8" }), `test: bad snapshot: views count "8" (want 0..7)`},
		{"missing view", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "4" }), "test: bad snapshot: view 3 has neither metadata nor an empty mark"},
		{"fewer views", edit(func(s *tensor.Snapshot) { s.Metadata["views"] = "2" }), `test: bad snapshot: unexpected metadata entry "views.2.`},
		{"bad empty mark", edit(func(s *tensor.Snapshot) { s.Metadata["views.1.empty"] = "yes" }), `test: bad snapshot: views.1.empty = "yes"`},
		{"bad metadata json", edit(func(s *tensor.Snapshot) { s.Metadata["views.0.metadata"] = "{" }), "test: bad snapshot: views.0.metadata: unexpected end of JSON input"},
		{"bad layer index", edit(func(s *tensor.Snapshot) { s.Metadata["views.0.layer_index"] = "one" }), `test: bad snapshot: views.0.layer_index = "one"`},
		{"view error", edit(func(s *tensor.Snapshot) { s.Int32s["views.2.pos"] = []int32{1} }), "test: bad snapshot: view 2: test: bad shape: data float32[3] and 1 positions for 3 rows"},
		{"extra metadata", edit(func(s *tensor.Snapshot) { s.Metadata["views.1.note"] = "x" }), `test: bad snapshot: unexpected metadata entry "views.1.note"`},
		{"extra tensor", edit(func(s *tensor.Snapshot) {
			s.Tensors["views.0.other"] = tensor.Must(tensor.New(tensor.Float32, 1))
		}), `test: bad snapshot: unexpected tensor "views.0.other"`},
		{"extra int32s", edit(func(s *tensor.Snapshot) { s.Int32s["views.1.pos"] = []int32{0} }), `test: bad snapshot: unexpected int32 array "views.1.pos"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := codec.UnmarshalCache(tc.data)
			require.ErrorIs(t, err, errSnap)
			assert.True(t, strings.HasPrefix(err.Error(), tc.msg), "%q does not start with %q", err, tc.msg)
		})
	}

	// A view error keeps its own sentinel, and one that already wraps Err
	// is not wrapped again.
	_, err := codec.UnmarshalCache(edit(func(s *tensor.Snapshot) { s.Int32s["views.2.pos"] = nil }))
	require.ErrorIs(t, err, errShape)
	_, err = codec.UnmarshalCache(edit(func(s *tensor.Snapshot) { s.Metadata["views.2.layer_index"] = "" }))
	assert.EqualError(t, err, `test: bad snapshot: views.2.layer_index = ""`)
}

func TestMarshalErrors(t *testing.T) {
	bad := newView(t, nil, 1, "")
	bad.meta.Scale = math.NaN()
	_, err := codec.MarshalCache([]testView{{}, bad})
	require.ErrorIs(t, err, errSnap)
	assert.Regexp(t, "^test: bad snapshot: view 1 metadata: json: unsupported value: NaN", err.Error())

	failing := codec
	errPut := errors.New("put failed")
	failing.Put = func(Entry, testView) error { return errPut }
	_, err = failing.MarshalView(newView(t, nil, 1, ""))
	require.ErrorIs(t, err, errPut)
	_, err = failing.MarshalView(testView{})
	require.NoError(t, err, "an empty view is only a mark")
}

func TestEntry(t *testing.T) {
	s := tensor.Snapshot{Metadata: map[string]string{}, Tensors: map[string]tensor.Tensor{}, Int32s: map[string][]int32{}}
	e := Entry{s: s, i: 12, err: errSnap}
	assert.Equal(t, 12, e.Index())
	assert.Equal(t, "views.12.conv_states", e.Key("conv_states"))

	_, ok := e.Meta("x")
	assert.False(t, ok)
	_, ok = e.Tensor("x")
	assert.False(t, ok)
	assert.Nil(t, e.Int32s("x"))
	l, err := e.LayerIndex()
	require.NoError(t, err)
	assert.Nil(t, l, "no layer index")
	var m testMeta
	require.ErrorIs(t, e.Metadata(&m), errSnap)

	e.SetLayerIndex(5, false)
	assert.Empty(t, s.Metadata, "layer_index=None stores nothing")
	e.SetLayerIndex(-3, true)
	assert.Equal(t, "-3", s.Metadata["views.12.layer_index"])
	l, err = e.LayerIndex()
	require.NoError(t, err)
	assert.Equal(t, -3, *l)
	require.NoError(t, e.SetMetadata(testMeta{Rows: 4}))
	require.NoError(t, e.Metadata(&m))
	assert.Equal(t, testMeta{Rows: 4}, m)
}

func FuzzUnmarshalCache(f *testing.F) {
	f.Add(mustBytes(f)(codec.MarshalCache(testCache(f))))
	f.Add(mustBytes(f)(codec.MarshalView(newView(f, ptr(1), 2, "x"))))
	f.Add([]byte{})
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint64(hdr, 2)
	f.Add(append(hdr, '{', '}'))
	f.Fuzz(func(t *testing.T, data []byte) {
		views, err := codec.UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, errSnap)
			return
		}
		again, err := codec.MarshalCache(views)
		require.NoError(t, err)
		back, err := codec.UnmarshalCache(again)
		require.NoError(t, err)
		require.Len(t, back, len(views))
		for i := range views {
			assertSame(t, views[i], back[i])
		}
		_, _ = codec.UnmarshalView(data)
	})
}
