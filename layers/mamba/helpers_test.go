package mamba

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
)

// testMeta returns metadata for a cache of layers layers with batch b,
// intermediate size i, state size n and kernel k.
func testMeta(t testing.TB, layers, b, i, n, k int) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: layers, BatchSize: b, IntermediateSize: i, SSMStateSize: n, ConvKernelSize: k})
	require.NoError(t, err)
	return m
}

// view returns layer i of c.
func view(t testing.TB, c Cache, i int) View { return testkit.Layer[View](t, c, i) }

// requireSameView requires got to hold what want holds: both empty, or the
// same dtype, layer index, metadata, states and positions, the states in
// the store layout (one chunk per batch row).
func requireSameView(t testing.TB, want, got View) {
	t.Helper()
	if testkit.RequireSameStates(t, want, got) {
		require.Equal(t, want.Metadata(), got.Metadata())
	}
}
