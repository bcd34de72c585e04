package mamba

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// testMeta returns metadata for a cache of layers layers with batch b,
// intermediate size i, state size n and kernel k.
func testMeta(t testing.TB, layers, b, i, n, k int) Metadata {
	t.Helper()
	m, err := NewMetadata(MetadataConfig{NumHiddenLayers: layers, BatchSize: b, IntermediateSize: i, SSMStateSize: n, ConvKernelSize: k})
	require.NoError(t, err)
	return m
}
