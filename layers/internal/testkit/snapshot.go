package testkit

import (
	"encoding/binary"
	"fmt"
	"maps"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// SnapshotView is a view as the snapshot harness sees it: a value that
// encodes itself and may be the empty view.
type SnapshotView interface {
	MarshalBinary() ([]byte, error)
	IsEmpty() bool
}

// SnapshotCache is a cache of views of type V as the snapshot harness sees
// it.
type SnapshotCache[V any] interface {
	MarshalBinary() ([]byte, error)
	Len() int
	View(i int) (V, error)
}

// Snapshots is the snapshot test harness of one package whose caches are a
// list of views in package viewsnap's format (mamba, mamba2, lightning).
// The package's tests keep the snapshots particular to it (their cache,
// its malformations); the harness runs the checks they share.
type Snapshots[V SnapshotView, C SnapshotCache[V]] struct {
	// UnmarshalView and UnmarshalCache are the package's decoders.
	UnmarshalView  func(data []byte) (V, error)
	UnmarshalCache func(data []byte) (C, error)
	// SameView requires got to hold what want holds (either may be empty).
	SameView func(t testing.TB, want, got V)
	// Err is the package's snapshot sentinel, which every decoding error
	// wraps.
	Err error
	// ForeignFormat is another package's cache format, which
	// UnmarshalCache must refuse.
	ForeignFormat string
	// StrayTensor is a tensor field of a non-empty view ("conv_states"),
	// which an empty view must not have.
	StrayTensor string
}

// SameCaches requires got to have want's length and, layer by layer, the
// views SameView accepts.
func (h Snapshots[V, C]) SameCaches(t testing.TB, want, got C) {
	t.Helper()
	require.Equal(t, want.Len(), got.Len())
	for l := 0; l < want.Len(); l++ {
		h.SameView(t, Layer[V](t, want, l), Layer[V](t, got, l))
	}
}

// RoundTripCache encodes c, decodes it, requires the same views and the
// same bytes when the decoded cache is encoded again, and returns the
// decoded cache.
func (h Snapshots[V, C]) RoundTripCache(t testing.TB, c C) C {
	t.Helper()
	b, err := c.MarshalBinary()
	require.NoError(t, err)
	back, err := h.UnmarshalCache(b)
	require.NoError(t, err)
	h.SameCaches(t, c, back)
	b2, err := back.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, b, b2, "encoding is deterministic")
	return back
}

// RoundTripViews encodes every view of c, the views extra and the zero
// view one at a time, and requires each to decode to the same view; then
// requires UnmarshalView to refuse c's cache snapshot (another format).
func (h Snapshots[V, C]) RoundTripViews(t testing.TB, c C, extra ...V) {
	t.Helper()
	var zero V
	views := []V{zero}
	for l := 0; l < c.Len(); l++ {
		views = append(views, Layer[V](t, c, l))
	}
	for i, v := range append(views, extra...) {
		b, err := v.MarshalBinary()
		require.NoError(t, err, "view %d", i)
		back, err := h.UnmarshalView(b)
		require.NoError(t, err, "view %d", i)
		h.SameView(t, v, back)
	}
	cb, err := c.MarshalBinary()
	require.NoError(t, err)
	_, err = h.UnmarshalView(cb)
	require.ErrorIs(t, err, h.Err)
	assert.Contains(t, err.Error(), "format")
}

// SnapshotCase is a malformed snapshot and a substring of the error its
// decoding must give.
type SnapshotCase struct {
	Name string
	Data []byte
	Msg  string
}

// RefuseCaches requires UnmarshalCache to refuse every case with an error
// wrapping Err and containing its Msg: the cases given, then the
// malformations of the view-list format derived from raw, the snapshot of
// a cache whose view 0 is non-empty and view 1 empty (truncation, garbage,
// another format, bad view counts, a missing view, bad metadata JSON, bad
// layer indexes, a bad empty mark, unexpected entries).
func (h Snapshots[V, C]) RefuseCaches(t *testing.T, raw []byte, cases ...SnapshotCase) {
	t.Helper()
	good, err := tensor.UnmarshalSnapshot(raw)
	require.NoError(t, err)
	n, err := strconv.Atoi(good.Metadata["views"])
	require.NoError(t, err)
	edit := func(f func(s *tensor.Snapshot)) []byte { return EditSnapshot(t, raw, f) }
	setMeta := func(key, value string) []byte {
		return edit(func(s *tensor.Snapshot) { s.Metadata[key] = value })
	}
	cases = append(cases,
		SnapshotCase{"truncated", raw[:len(raw)-1], ""},
		SnapshotCase{"truncated by 3", raw[:len(raw)-3], ""},
		SnapshotCase{"garbage", []byte("not a snapshot"), ""},
		SnapshotCase{"wrong format", setMeta("format", h.ForeignFormat), "format"},
		SnapshotCase{"bad count", setMeta("views", "-1"), "views count"},
		SnapshotCase{"missing view", setMeta("views", strconv.Itoa(n+1)), fmt.Sprintf("view %d has neither metadata nor an empty mark", n)},
		SnapshotCase{"bad metadata json", setMeta("views.0.metadata", "{"), "views.0.metadata"},
		SnapshotCase{"bad layer index", setMeta("views.0.layer_index", "x"), "layer_index"},
		SnapshotCase{"fractional layer index", setMeta("views.0.layer_index", "1.5"), "layer_index"},
		SnapshotCase{"bad empty mark", setMeta("views.1.empty", "yes"), "views.1.empty"},
		SnapshotCase{"extra metadata", setMeta("views.9.metadata", "{}"), "unexpected metadata entry"},
		SnapshotCase{"stray tensor", edit(func(s *tensor.Snapshot) {
			s.Tensors["views.1."+h.StrayTensor] = Constant(tensor.Float32, 0, 1)
		}), "unexpected tensor"},
		SnapshotCase{"extra ints", edit(func(s *tensor.Snapshot) { s.Int32s["x"] = []int32{1} }), "unexpected int32 array"},
	)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := h.UnmarshalCache(tc.Data)
			require.ErrorIs(t, err, h.Err)
			assert.Contains(t, err.Error(), tc.Msg)
		})
	}
}

// FuzzCaches fuzzes UnmarshalCache from the seeds, an empty input and a
// header-only one: a refusal must wrap Err, and an accepted cache must
// encode, decode to the same views, and leave UnmarshalView without a
// panic on the same input.
func (h Snapshots[V, C]) FuzzCaches(f *testing.F, seeds ...[]byte) {
	for _, b := range seeds {
		f.Add(b)
	}
	f.Add([]byte{})
	hdr := make([]byte, 8)
	binary.LittleEndian.PutUint64(hdr, 2)
	f.Add(append(hdr, '{', '}'))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := h.UnmarshalCache(data)
		if err != nil {
			require.ErrorIs(t, err, h.Err)
			return
		}
		// Anything accepted re-encodes and decodes to the same cache.
		again, err := c.MarshalBinary()
		require.NoError(t, err)
		c2, err := h.UnmarshalCache(again)
		require.NoError(t, err)
		h.SameCaches(t, c, c2)
		_, _ = h.UnmarshalView(data)
	})
}

// EditSnapshot decodes the snapshot data, applies edit to a copy of it and
// returns the copy encoded: a malformed snapshot for a decoder's tests.
func EditSnapshot(t testing.TB, data []byte, edit func(s *tensor.Snapshot)) []byte {
	t.Helper()
	good, err := tensor.UnmarshalSnapshot(data)
	require.NoError(t, err)
	c := tensor.Snapshot{Metadata: map[string]string{}, Tensors: map[string]tensor.Tensor{}, Int32s: map[string][]int32{}}
	maps.Copy(c.Metadata, good.Metadata)
	maps.Copy(c.Tensors, good.Tensors)
	maps.Copy(c.Int32s, good.Int32s)
	edit(&c)
	b, err := c.MarshalBinary()
	require.NoError(t, err)
	return b
}

// Layer returns view i of c, failing t when c has no layer i.
func Layer[V any](t testing.TB, c interface{ View(int) (V, error) }, i int) V {
	t.Helper()
	v, err := c.View(i)
	require.NoError(t, err)
	return v
}

// HeaderView is a view as RequireSameHeader sees it.
type HeaderView interface {
	IsEmpty() bool
	DType() tensor.DType
	LayerIndex() (int, bool)
}

// RequireSameHeader requires want and got to be both empty or both
// non-empty and then to agree on dtype and layer index; it reports whether
// they are non-empty, their contents still to compare.
func RequireSameHeader(t testing.TB, want, got HeaderView) bool {
	t.Helper()
	require.Equal(t, want.IsEmpty(), got.IsEmpty(), "empty")
	if want.IsEmpty() {
		return false
	}
	require.Equal(t, want.DType(), got.DType())
	wl, wok := want.LayerIndex()
	gl, gok := got.LayerIndex()
	require.Equal(t, wok, gok, "has a layer index")
	require.Equal(t, wl, gl, "layer index")
	return true
}

// StateView is a mamba-family view as RequireSameStates sees it.
type StateView interface {
	HeaderView
	ConvStates() tensor.Tensor
	SSMStates() tensor.Tensor
	Positions() []int32
}

// RequireSameStates is RequireSameHeader, then, for non-empty views, the
// same conv and SSM states and positions, got's states in the store layout
// (one chunk per batch row). It reports whether the views are non-empty,
// their other fields still to compare.
func RequireSameStates(t testing.TB, want, got StateView) bool {
	t.Helper()
	if !RequireSameHeader(t, want, got) {
		return false
	}
	require.True(t, want.ConvStates().Equal(got.ConvStates()), "conv_states differ")
	require.True(t, want.SSMStates().Equal(got.SSMStates()), "ssm_states differ")
	require.Equal(t, want.Positions(), got.Positions())
	require.Equal(t, want.ConvStates().Dim(0), got.ConvStates().NumChunks(), "store layout restored")
	return true
}
