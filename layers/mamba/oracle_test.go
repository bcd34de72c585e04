package mamba

import (
	"testing"

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
	require.Equal(t, []int{B, S, I}, x.Shape)
	meta := testMeta(t, 1, B, I, 3, K)
	testkit.ConvTrajectory(t, o, x, []string{"after_token", "batch", "d_inner", "d_conv"}, func(t *testing.T, dtype tensor.DType) View {
		v, err := NewView(meta, dtype, nil)
		require.NoError(t, err)
		return v
	})
}
