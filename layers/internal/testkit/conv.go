package testkit

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// ConvView is a mamba-family view (mamba, mamba2) as the conv harnesses
// see it: a (B, C, K) conv state and EasyDeL's update_conv_state in its
// scalar and array cache_position forms.
type ConvView[V any] interface {
	ConvStates() tensor.Tensor
	UpdateConvState(newConvState tensor.Tensor, cachePosition int) (V, error)
	UpdateConvStatePositions(newConvState tensor.Tensor, cachePositions []int32) (V, error)
}

// Windows returns a (B, C, K) conv state as rows of K values, one per
// (b, c).
func Windows(st tensor.Tensor) [][]float64 {
	k := st.Dim(2)
	all := st.Float64s()
	var out [][]float64
	for i := 0; i < len(all); i += k {
		out = append(out, all[i:i+k])
	}
	return out
}

// RollAndWrite checks update_conv_state's roll and write for every clipped
// position: each window [x1 x2 x3 x4] rolls left to [x2 x3 x4 x1], then
// column clip(cp) takes the new input e = -(100b+10c), and the receiver
// keeps its bytes. fresh returns a float32 view of batch 2, 3 channels and
// kernel 4 whose window of row b, channel c is 100b+10c+{1,2,3,4}.
func RollAndWrite[V ConvView[V]](t *testing.T, fresh func() V) {
	t.Helper()
	cases := []struct {
		cp   int
		want func(x1, x2, x3, x4, e float64) []float64
	}{
		{3, func(x1, x2, x3, x4, e float64) []float64 { return []float64{x2, x3, x4, e} }}, // EasyDeL's [a,b,c,d]+e -> [b,c,d,e]
		{10, func(x1, x2, x3, x4, e float64) []float64 { return []float64{x2, x3, x4, e} }},
		{2, func(x1, x2, x3, x4, e float64) []float64 { return []float64{x2, x3, e, x1} }},
		{1, func(x1, x2, x3, x4, e float64) []float64 { return []float64{x2, e, x4, x1} }},
		{0, func(x1, x2, x3, x4, e float64) []float64 { return []float64{e, x3, x4, x1} }},
		{-1, func(x1, x2, x3, x4, e float64) []float64 { return []float64{e, x3, x4, x1} }},
	}
	for _, tc := range cases {
		v := fresh()
		before := v.ConvStates().Float64s()
		col := Build(tensor.Float64, []int{2, 3}, func(i []int) float64 { return -float64(100*i[0] + 10*i[1]) })
		next, err := v.UpdateConvState(col, tc.cp)
		require.NoError(t, err, "cp=%d", tc.cp)
		var want [][]float64
		for b := 0; b < 2; b++ {
			for c := 0; c < 3; c++ {
				base := float64(100*b + 10*c)
				want = append(want, tc.want(base+1, base+2, base+3, base+4, -base))
			}
		}
		assert.Equal(t, want, Windows(next.ConvStates()), "cp=%d", tc.cp)
		assert.Equal(t, before, v.ConvStates().Float64s(), "receiver unchanged, cp=%d", tc.cp)
		assert.Equal(t, tensor.Float32, next.ConvStates().DType())
	}
}

// ClipFromZero checks the clipping of EasyDeL's
// test_cache_position_clipping and test_negative_cache_position: on a zero
// state, an input of ones lands in column clip(cp) only. zero returns a
// float32 view of kernel 4 whose conv state is zero.
func ClipFromZero[V ConvView[V]](t *testing.T, zero func() V) {
	t.Helper()
	for _, tc := range []struct{ cp, onesAt int }{{10, 3}, {-1, 0}, {1, 1}, {3, 3}, {-100, 0}} {
		v := zero()
		b, c := v.ConvStates().Dim(0), v.ConvStates().Dim(1)
		next, err := v.UpdateConvState(Constant(tensor.Float32, 1, b, c), tc.cp)
		require.NoError(t, err)
		for k := 0; k < 4; k++ {
			want := 0.0
			if k == tc.onesAt {
				want = 1
			}
			assert.Equal(t, Filled(b*c, want), Column(next.ConvStates(), k), "cp=%d column %d", tc.cp, k)
		}
	}
}

// LastKInputs checks the oracle README's convention: after P tokens
// written at position K-1, the window is the last K inputs, left-padded
// with zeros when P < K. zero returns a float64 view of batch 2, 3
// channels and kernel 4 whose conv state is zero.
func LastKInputs[V ConvView[V]](t *testing.T, zero func() V) {
	t.Helper()
	const k = 4
	for p := 1; p <= 2*k+1; p++ {
		v := zero()
		input := func(tok, b, c int) float64 { return float64(1000*(tok+1) + 10*b + c) }
		for tok := 0; tok < p; tok++ {
			x := Build(tensor.Float64, []int{2, 3}, func(i []int) float64 { return input(tok, i[0], i[1]) })
			var err error
			v, err = v.UpdateConvState(x, k-1)
			require.NoError(t, err)
		}
		var want [][]float64
		for b := 0; b < 2; b++ {
			for c := 0; c < 3; c++ {
				w := make([]float64, k)
				for j := 0; j < k; j++ {
					if tok := p - k + j; tok >= 0 {
						w[j] = input(tok, b, c)
					}
				}
				want = append(want, w)
			}
		}
		assert.Equal(t, want, Windows(v.ConvStates()), "after %d tokens", p)
	}
}

// ConvTrajectory feeds the golden input x (batch, seq, channels) of o
// token by token with cache position K-1 (K is o's d_conv) and requires
// the conv state after each token to be the reference's conv_state_traj
// (after_token, batch, channels, d_conv, whose axes are trajAxes), in
// float64 and in float32; and the same after a prefill of P tokens (the
// window set at positions 0..K-1 from the last K inputs, left-padded with
// zeros) for every P of o's prefill_splits. fresh returns a zero view of
// dtype for x's sizes.
func ConvTrajectory[V ConvView[V]](t *testing.T, o Oracle, x OracleTensor, trajAxes []string, fresh func(t *testing.T, dtype tensor.DType) V) {
	t.Helper()
	require.Len(t, x.Shape, 3)
	B, S, C, K := x.Shape[0], x.Shape[1], x.Shape[2], o.IntConfig(t, "d_conv")
	splits := []int{0}
	for _, p := range o.Config["prefill_splits"].([]any) {
		splits = append(splits, int(p.(float64)))
	}
	for _, dc := range []struct {
		dtype tensor.DType
		traj  OracleTensor
	}{{tensor.Float64, o.OutputsFloat64["conv_state_traj"]}, {tensor.Float32, o.OutputsFloat32["conv_state_traj"]}} {
		require.Equal(t, trajAxes, dc.traj.Axes)
		state := func(tok int) []float64 { return dc.traj.Data[tok*B*C*K : (tok+1)*B*C*K] }
		for _, p := range splits {
			t.Run(fmt.Sprintf("%s prefill %d", dc.dtype, p), func(t *testing.T) {
				v := fresh(t, dc.dtype)
				var err error
				if p > 0 {
					window := Build(tensor.Float64, []int{B, C, K}, func(i []int) float64 {
						if tok := p - K + i[2]; tok >= 0 {
							return x.Data[(i[0]*S+tok)*C+i[1]]
						}
						return 0
					})
					v, err = v.UpdateConvStatePositions(window, Arange(K))
					require.NoError(t, err)
					assert.Equal(t, state(p-1), v.ConvStates().Float64s(), "after prefill")
				}
				for tok := p; tok < S; tok++ {
					xt := Build(tensor.Float64, []int{B, C}, func(i []int) float64 { return x.Data[(i[0]*S+tok)*C+i[1]] })
					v, err = v.UpdateConvState(xt, K-1)
					require.NoError(t, err)
					assert.Equal(t, state(tok), v.ConvStates().Float64s(), "after token %d", tok)
				}
			})
		}
	}
}

// SSMView is a ConvView with an SSM state (B, ...) of the conv state's
// dtype.
type SSMView[V any] interface {
	ConvView[V]
	SSMStates() tensor.Tensor
	UpdateSSMState(newSSMState tensor.Tensor) (V, error)
}

// ConvertsDType checks that UpdateConvState (at position K-1) and
// UpdateSSMState convert their float64 inputs to the cache dtype, as
// astype does: 1 + 2^-10 is exact in float16 and float32 but rounds to 1
// in bfloat16 (8 significant bits), 1 + 2^-7 is exact in all three. zero
// returns a view of dtype whose states are zero.
func ConvertsDType[V SSMView[V]](t *testing.T, zero func(dtype tensor.DType) V) {
	t.Helper()
	for _, tc := range []struct {
		dtype    tensor.DType
		in, want float64
	}{
		{tensor.Float32, 1 + 1.0/1024, 1 + 1.0/1024},
		{tensor.Float16, 1 + 1.0/1024, 1 + 1.0/1024},
		{tensor.BFloat16, 1 + 1.0/1024, 1},
		{tensor.BFloat16, 1 + 1.0/128, 1 + 1.0/128},
		{tensor.Float64, 1 + 1.0/(1<<40), 1 + 1.0/(1<<40)},
	} {
		v := zero(tc.dtype)
		b, c, k := v.ConvStates().Dim(0), v.ConvStates().Dim(1), v.ConvStates().Dim(2)
		next, err := v.UpdateConvState(Constant(tensor.Float64, tc.in, b, c), k-1)
		require.NoError(t, err)
		assert.Equal(t, tc.dtype, next.ConvStates().DType())
		window := append(Filled(k-1, 0), tc.want)
		for i, w := range Windows(next.ConvStates()) {
			assert.Equal(t, window, w, "%s window %d", tc.dtype, i)
		}
		ssm := v.SSMStates().Shape()
		next, err = next.UpdateSSMState(Constant(tensor.Float64, tc.in, ssm...))
		require.NoError(t, err)
		assert.Equal(t, tc.dtype, next.SSMStates().DType())
		assert.Equal(t, Filled(v.SSMStates().Len(), tc.want), next.SSMStates().Float64s(), "%s", tc.dtype)
	}
}
