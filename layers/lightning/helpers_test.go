package lightning

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
)

// testMeta returns metadata with batch b, heads h and head dim d.
func testMeta(t testing.TB, b, h, d int) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{BatchSize: Ptr(b), NumHeads: Ptr(h), HeadDim: Ptr(d)})
	require.NoError(t, err)
	return m
}

// wave returns a deterministic, irregular value for a flat index and seed.
func wave(seed, i int) float64 { return math.Sin(float64(7*i+13*seed+1)) * (1 + 0.25*float64(i%5)) }

// view returns layer i of c.
func view(t testing.TB, c Cache, i int) View { return testkit.Layer[View](t, c, i) }

// requireSameView requires got to hold what want holds: both empty, or the
// same dtype, layer index and metadata and the same key_value state (or
// both absent), the state in the store layout (one chunk per batch row).
func requireSameView(t testing.TB, want, got View) {
	t.Helper()
	if !testkit.RequireSameHeader(t, want, got) {
		return
	}
	require.Equal(t, want.Metadata(), got.Metadata())
	require.Equal(t, want.HasKeyValue(), got.HasKeyValue())
	if want.HasKeyValue() {
		require.True(t, want.KeyValue().Equal(got.KeyValue()), "key_value differs")
		require.Equal(t, want.KeyValue().Dim(0), got.KeyValue().NumChunks(), "store layout restored")
	}
}
