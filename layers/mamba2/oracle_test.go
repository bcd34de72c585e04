package mamba2

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// TestOracleConvStateTrajectory feeds the mamba2_inner golden inputs xBC
// (batch, seq, conv_dim) token by token with cache position K-1 and checks
// the conv state after each token against the reference's conv_state_traj
// (after_token, batch, conv_dim, d_conv), in float64 and float32, also after
// a prefill that sets the window at positions 0..K-1. It also checks that
// the metadata's ConvDim matches the reference's conv_dim.
func TestOracleConvStateTrajectory(t *testing.T) {
	o := testkit.LoadOracle(t, "mamba2_inner.json")
	B, S, K := o.IntConfig(t, "batch"), o.IntConfig(t, "seqlen"), o.IntConfig(t, "d_conv")
	meta := testMeta(t, dims{layers: 1, b: B, i: o.IntConfig(t, "d_inner"), h: o.IntConfig(t, "n_heads"),
		p: o.IntConfig(t, "head_dim"), n: o.IntConfig(t, "d_state"), k: K, g: o.IntConfig(t, "n_groups")})
	C := meta.ConvDim()
	require.Equal(t, o.IntConfig(t, "conv_dim"), C)
	x := o.Inputs["xBC"]
	require.Equal(t, []int{B, S, C}, x.Shape)
	ssmShape := o.OutputsFloat64["ssm_state_final"].Shape
	for _, dc := range []struct {
		dtype tensor.DType
		traj  testkit.OracleTensor
	}{{tensor.Float64, o.OutputsFloat64["conv_state_traj"]}, {tensor.Float32, o.OutputsFloat32["conv_state_traj"]}} {
		require.Equal(t, []string{"after_token", "batch", "conv_dim", "d_conv"}, dc.traj.Axes)
		state := func(tok int) []float64 { return dc.traj.Data[tok*B*C*K : (tok+1)*B*C*K] }
		splits := []int{0}
		for _, p := range o.Config["prefill_splits"].([]any) {
			splits = append(splits, int(p.(float64)))
		}
		for _, p := range splits {
			t.Run(fmt.Sprintf("%s prefill %d", dc.dtype, p), func(t *testing.T) {
				v, err := NewView(meta, dc.dtype, nil)
				require.NoError(t, err)
				assert.Equal(t, ssmShape, v.SSMStates().Shape(), "the reference's SSM state shape")
				if p > 0 {
					window := testkit.Build(tensor.Float64, []int{B, C, K}, func(i []int) float64 {
						if tok := p - K + i[2]; tok >= 0 {
							return x.Data[(i[0]*S+tok)*C+i[1]]
						}
						return 0
					})
					v, err = v.UpdateConvStatePositions(window, testkit.Arange(K))
					require.NoError(t, err)
					assert.Equal(t, state(p-1), v.ConvStates().Float64s(), "after prefill")
				}
				for tok := p; tok < S; tok++ {
					xt := testkit.Build(tensor.Float64, []int{B, C}, func(i []int) float64 { return x.Data[(i[0]*S+tok)*C+i[1]] })
					v, err = v.UpdateConvState(xt, K-1)
					require.NoError(t, err)
					assert.Equal(t, state(tok), v.ConvStates().Float64s(), "after token %d", tok)
				}
			})
		}
	}
}
