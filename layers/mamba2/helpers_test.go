package mamba2

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
)

// dims are the sizes of a test cache.
type dims struct{ layers, b, i, h, p, n, k, g int }

// easy is EasyDeL's test configuration: batch 2, intermediate 64, 4 heads of
// 16, state 16, kernel 4, 1 group (conv_dim 96).
var easy = dims{layers: 3, b: 2, i: 64, h: 4, p: 16, n: 16, k: 4, g: 1}

// small has conv_dim 1 + 2*1*1 = 3 and SSM state (2, 1, 2, 1).
var small = dims{layers: 1, b: 2, i: 1, h: 1, p: 2, n: 1, k: 4, g: 1}

// testMeta returns metadata for d.
func testMeta(t testing.TB, d dims) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: d.layers, BatchSize: d.b, IntermediateSize: d.i,
		NumHeads: d.h, HeadDim: d.p, StateSize: d.n, ConvKernelSize: d.k, NGroups: d.g})
	require.NoError(t, err)
	return m
}

// view returns layer i of c.
func view(t testing.TB, c Cache, i int) View { return testkit.Layer[View](t, c, i) }

// requireSameView requires got to hold what want holds: both empty, or the
// same dtype, layer index, metadata, states, positions and seqlen_offset,
// the states in the store layout (one chunk per batch row).
func requireSameView(t testing.TB, want, got View) {
	t.Helper()
	if testkit.RequireSameStates(t, want, got) {
		require.Equal(t, want.SeqlenOffset(), got.SeqlenOffset())
		require.Equal(t, want.Metadata(), got.Metadata())
	}
}
