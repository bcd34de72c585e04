package lightning

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// TestOracleKVStateTrajectory feeds the lightning golden k and v (batch,
// heads, seq, head_dim) with the reference's slope_rate and checks the
// key_value state after every token against kv_state_traj (after_token,
// batch, heads, head_dim(k), head_dim(v)): token by token, after a prefill
// of P tokens in one Update, and all at once; 1e-12 against the float64
// outputs and 1e-5 against the float32 ones (oracle README tolerances).
func TestOracleKVStateTrajectory(t *testing.T) {
	o := testkit.LoadOracle(t, "lightning.json")
	B, S, H, D := o.IntConfig(t, "batch"), o.IntConfig(t, "seqlen"), o.IntConfig(t, "num_attention_heads"), o.IntConfig(t, "head_dim")
	splits := []int{0, S}
	for _, p := range o.Config["prefill_splits"].([]any) {
		splits = append(splits, int(p.(float64)))
	}
	for _, dc := range []struct {
		dtype tensor.DType
		out   map[string]testkit.OracleTensor
		tol   float64
	}{{tensor.Float64, o.OutputsFloat64, 1e-12}, {tensor.Float32, o.OutputsFloat32, 1e-5}} {
		k, v, traj := dc.out["k"], dc.out["v"], dc.out["kv_state_traj"]
		require.Equal(t, []string{"batch", "heads", "seq", "head_dim"}, k.Axes)
		require.Equal(t, []string{"after_token", "batch", "heads", "head_dim(k)", "head_dim(v)"}, traj.Axes)
		slopes := dc.out["slope_rate"].Data
		tokens := func(x testkit.OracleTensor, from, to int) tensor.Tensor {
			return testkit.Build(dc.dtype, []int{B, H, to - from, D}, func(i []int) float64 {
				return x.Data[((i[0]*H+i[1])*S+from+i[2])*D+i[3]]
			})
		}
		state := func(tok int) []float64 { return traj.Data[tok*B*H*D*D : (tok+1)*B*H*D*D] }
		for _, p := range splits {
			t.Run(fmt.Sprintf("%s prefill %d", dc.dtype, p), func(t *testing.T) {
				view, err := NewView(testMeta(t, B, H, D), dc.dtype, nil)
				require.NoError(t, err)
				if p > 0 {
					view, err = view.Update(tokens(k, 0, p), tokens(v, 0, p), slopes)
					require.NoError(t, err)
					assert.InDeltaSlice(t, state(p-1), view.KeyValue().Float64s(), dc.tol, "after prefill")
				}
				for tok := p; tok < S; tok++ {
					view, err = view.Update(tokens(k, tok, tok+1), tokens(v, tok, tok+1), slopes)
					require.NoError(t, err)
					assert.InDeltaSlice(t, state(tok), view.KeyValue().Float64s(), dc.tol, "after token %d", tok)
				}
				assert.InDeltaSlice(t, dc.out["kv_state_final"].Data, view.KeyValue().Float64s(), dc.tol)
			})
		}
	}
}

// TestOracleSlopeRates checks SlopeRates against the reference's
// slope_rate for its layer and layer count.
func TestOracleSlopeRates(t *testing.T) {
	o := testkit.LoadOracle(t, "lightning.json")
	got, err := SlopeRates(o.IntConfig(t, "num_attention_heads"), o.IntConfig(t, "layer_idx"), o.IntConfig(t, "num_hidden_layers"))
	require.NoError(t, err)
	assert.InDeltaSlice(t, o.OutputsFloat64["slope_rate"].Data, got, 1e-15)
}
