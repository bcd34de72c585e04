package reference

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// oracleTensor is a tensor of the golden files (testdata/oracles/README.md).
type oracleTensor struct {
	Shape []int     `json:"shape"`
	Axes  []string  `json:"axes"`
	Data  []float64 `json:"data"`
}

// oracleCase is one golden file.
type oracleCase struct {
	Case      string                  `json:"case"`
	Config    map[string]any          `json:"config"`
	Inputs    map[string]oracleTensor `json:"inputs"`
	Outputs64 map[string]oracleTensor `json:"outputs_float64"`
	Outputs32 map[string]oracleTensor `json:"outputs_float32"`
}

func loadOracle(t *testing.T, name string) oracleCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "oracles", name))
	require.NoError(t, err)
	var c oracleCase
	require.NoError(t, json.Unmarshal(b, &c))
	return c
}

func (c oracleCase) int(t *testing.T, key string) int {
	v, ok := c.Config[key].(float64)
	require.True(t, ok, "config %q", key)
	return int(v)
}

// permute returns the tensor's data laid out in the order of axes (names).
func (o oracleTensor) permute(t *testing.T, axes ...string) ([]float64, []int) {
	t.Helper()
	require.Len(t, axes, len(o.Axes))
	perm := make([]int, len(axes))
	shape := make([]int, len(axes))
	for i, a := range axes {
		perm[i] = slices.Index(o.Axes, a)
		require.GreaterOrEqual(t, perm[i], 0, "axis %q not in %v", a, o.Axes)
		shape[i] = o.Shape[perm[i]]
	}
	strides := make([]int, len(o.Shape))
	s := 1
	for i := len(o.Shape) - 1; i >= 0; i-- {
		strides[i] = s
		s *= o.Shape[i]
	}
	out := make([]float64, len(o.Data))
	idx := make([]int, len(shape))
	for k := range out {
		src := 0
		for i, x := range idx {
			src += x * strides[perm[i]]
		}
		out[k] = o.Data[src]
		for i := len(idx) - 1; i >= 0; i-- {
			if idx[i]++; idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return out, shape
}
