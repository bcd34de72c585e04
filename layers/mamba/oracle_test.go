package mamba

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// TestOracleConvStateTrajectory feeds the mamba1_inner golden inputs x
// (batch, seq, d_inner) token by token with cache position K-1 and checks
// that the conv state after each token equals the reference's
// conv_state_traj (after_token, batch, d_inner, d_conv), in float64 and in
// float32. A prefill of P tokens (the whole window set at positions 0..K-1
// from the last K inputs, left-padded) followed by single-token steps gives
// the same states.
func TestOracleConvStateTrajectory(t *testing.T) {
	o := testkit.LoadOracle(t, "mamba1_inner.json")
	B, S, I, K := o.IntConfig(t, "batch"), o.IntConfig(t, "seqlen"), o.IntConfig(t, "d_inner"), o.IntConfig(t, "d_conv")
	x := o.Inputs["x"]
	require.Equal(t, []string{"batch", "seq", "d_inner"}, x.Axes)
	for _, dc := range []struct {
		dtype tensor.DType
		traj  testkit.OracleTensor
	}{{tensor.Float64, o.OutputsFloat64["conv_state_traj"]}, {tensor.Float32, o.OutputsFloat32["conv_state_traj"]}} {
		require.Equal(t, []string{"after_token", "batch", "d_inner", "d_conv"}, dc.traj.Axes)
		state := func(tok int) []float64 { return dc.traj.Data[tok*B*I*K : (tok+1)*B*I*K] }
		token := func(tok int) tensor.Tensor {
			return testkit.Build(tensor.Float64, []int{B, I}, func(i []int) float64 { return x.Data[(i[0]*S+tok)*I+i[1]] })
		}
		meta := testMeta(t, 1, B, I, 3, K)
		splits := []int{0}
		for _, p := range o.Config["prefill_splits"].([]any) {
			splits = append(splits, int(p.(float64)))
		}
		for _, p := range splits {
			t.Run(fmt.Sprintf("%s prefill %d", dc.dtype, p), func(t *testing.T) {
				v, err := NewView(meta, dc.dtype, nil)
				require.NoError(t, err)
				if p > 0 {
					window := testkit.Build(tensor.Float64, []int{B, I, K}, func(i []int) float64 {
						tok := p - K + i[2]
						if tok < 0 {
							return 0
						}
						return x.Data[(i[0]*S+tok)*I+i[1]]
					})
					v, err = v.UpdateConvStatePositions(window, testkit.Arange(K))
					require.NoError(t, err)
					assert.Equal(t, state(p-1), v.ConvStates().Float64s(), "after prefill")
				}
				for tok := p; tok < S; tok++ {
					v, err = v.UpdateConvState(token(tok), K-1)
					require.NoError(t, err)
					assert.Equal(t, state(tok), v.ConvStates().Float64s(), "after token %d", tok)
				}
			})
		}
	}
}
