package budget

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// One iteration of every benchmark: each budget is measured and judged
// (whatever the verdict: timings are never asserted); in a race-detector
// build KV transfer is n/a.
func TestMeasureEveryBudget(t *testing.T) {
	var started []string
	res, err := Measure(Options{BenchTime: "1x", Progress: func(n string) { started = append(started, n) }})
	require.NoError(t, err)
	require.Len(t, res, 7)
	assert.Len(t, started, 7)
	measured := res
	if raceBuild {
		measured = res[:6]
		assert.Contains(t, res[6].NA, "race")
		assert.False(t, res[6].Pass)
	}
	for _, r := range measured {
		assert.NotEmpty(t, r.Measured, r.Name)
		assert.Positive(t, r.Value, r.Name)
		assert.NotEmpty(t, r.Limit, r.Name)
		assert.Empty(t, r.NA, r.Name)
	}
	for i, want := range []string{"32k vs 128", "32k vs 128", "copy()", "alloc+free", "actors vs goroutines", "actors vs goroutines", "KV transfer"} {
		assert.Contains(t, res[i].Name, want)
	}
}

func TestMeasureBadBenchTime(t *testing.T) {
	_, err := Measure(Options{BenchTime: "soon"})
	require.ErrorIs(t, err, ErrBenchTime)
	assert.Contains(t, err.Error(), `"soon"`)
}

// ratioResult judges a ratio against its limit, inclusive.
func TestRatioResult(t *testing.T) {
	for _, tc := range []struct {
		a, b float64
		pass bool
	}{{1.3, 1, true}, {1.31, 1, false}, {0.5, 1, true}} {
		r := ratioResult("x", "a", "b", tc.a, tc.b, 1.3)
		assert.Equal(t, tc.pass, r.Pass, "%v/%v", tc.a, tc.b)
		assert.InDelta(t, tc.a/tc.b, r.Value, 1e-12)
		assert.Equal(t, "<= 1.30", r.Limit)
	}
}
