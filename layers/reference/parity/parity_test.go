package parity

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGoldenFiles runs the six embedded golden files and requires every
// check within the default tolerances (1e-12 against float64, 1e-5 against
// float32).
func TestGoldenFiles(t *testing.T) {
	files := GoldenFiles()
	require.Len(t, files, 6)
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := Golden(f)
			require.NoError(t, err)
			res, err := Run(f, data, Options{})
			require.NoError(t, err)
			require.NotEmpty(t, res.Checks)
			for _, c := range res.Checks {
				fmt.Printf("%-14s %-40s f64 %.2e  f32 %.2e  %v\n", res.Case, c.Name, c.Diff64, c.Diff32, c.OK)
				assert.True(t, c.OK, "%s %s: f64 %.3g f32 %.3g", res.Case, c.Name, c.Diff64, c.Diff32)
			}
		})
	}
}
