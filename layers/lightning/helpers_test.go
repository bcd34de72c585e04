package lightning

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
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
