package mamba2

import (
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
	testkit.ConvTrajectory(t, o, x, []string{"after_token", "batch", "conv_dim", "d_conv"}, func(t *testing.T, dtype tensor.DType) View {
		v, err := NewView(meta, dtype, nil)
		require.NoError(t, err)
		assert.Equal(t, ssmShape, v.SSMStates().Shape(), "the reference's SSM state shape")
		return v
	})
}
