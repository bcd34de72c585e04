package reference

import "math"

// The kernels below are the per-row math shared by the full-sequence and
// the cached step paths. They work on plain slices in precision F, so the
// float32 path rounds every operation to float32 like the float32 oracle.

func silu[F float](x F) F { return x / (1 + F(math.Exp(float64(-x)))) }

func sigmoid[F float](x F) F { return 1 / (1 + F(math.Exp(float64(-x)))) }

// softplus is log(1+e^x), returning x itself above 20 as PyTorch does.
func softplus[F float](x F) F {
	if x > 20 {
		return x
	}
	return F(math.Log1p(math.Exp(float64(x))))
}

func expF[F float](x F) F { return F(math.Exp(float64(x))) }

// shiftIn moves a (C, K) conv window one column left and writes col into
// column K-1: the newest input is last, the oldest drops out.
func shiftIn[F float](state, col []F, k int) {
	for c := range col {
		row := state[c*k : (c+1)*k]
		copy(row, row[1:])
		row[k-1] = col[c]
	}
}

// convOut computes dst[c] = silu(Σ_k window[c,k]·w[c,k] + bias[c]) over a
// (C, K) window of raw inputs. bias may be nil.
func convOut[F float](dst, window, w, bias []F, k int) {
	for c := range dst {
		var s F
		for j := range k {
			s += window[c*k+j] * w[c*k+j]
		}
		if bias != nil {
			s += bias[c]
		}
		dst[c] = silu(s)
	}
}

// causalConv computes the depthwise causal convolution of a (T, C) sequence
// with zero history, writing silu(conv + bias) into out (T, C), and returns
// the final (C, K) window: the last K inputs, zero-padded on the left.
func causalConv[F float](out, x, w, bias []F, t, c, k int) []F {
	window := make([]F, c*k)
	for i := range t {
		for ch := range c {
			s := F(0)
			for j := range k {
				if src := i - (k - 1) + j; src >= 0 {
					s += x[src*c+ch] * w[ch*k+j]
				}
			}
			if bias != nil {
				s += bias[ch]
			}
			out[i*c+ch] = silu(s)
		}
	}
	for j := range k {
		if src := t - k + j; src >= 0 {
			for ch := range c {
				window[ch*k+j] = x[src*c+ch]
			}
		}
	}
	return window
}

// matVec computes dst = W·x for W (len(dst), len(x)) row-major.
func matVec[F float](dst, w, x []F) {
	n := len(x)
	for r := range dst {
		var s F
		for i, xv := range x {
			s += w[r*n+i] * xv
		}
		dst[r] = s
	}
}

// rmsNorm writes x/sqrt(mean(x²)+eps)·weight into dst, over groups of
// len(x)/groups consecutive values (groups = 1 normalises the whole vector).
func rmsNorm[F float](dst, x, weight []F, groups int, eps F) {
	g := len(x) / groups
	for s := 0; s < len(x); s += g {
		var ms F
		for _, v := range x[s : s+g] {
			ms += v * v
		}
		inv := 1 / F(math.Sqrt(float64(ms/F(g)+eps)))
		for i := s; i < s+g; i++ {
			dst[i] = x[i] * inv * weight[i]
		}
	}
}

// mambaSSMStep advances a Mamba (v1) state h (I, N) by one token and writes
// y (I) = (h·C + D·c)·silu(z). dt is the raw step (before bias and
// softplus), a is -exp(A_log) (I, N).
func mambaSSMStep[F float](h, y, c, dtRaw, dtBias, a, b, cm, d, z []F) {
	n := len(b)
	for i := range y {
		dt := softplus(dtRaw[i] + dtBias[i])
		row := h[i*n : (i+1)*n]
		var acc F
		for s := range n {
			row[s] = expF(dt*a[i*n+s])*row[s] + dt*c[i]*b[s]
			acc += row[s] * cm[s]
		}
		y[i] = (acc + d[i]*c[i]) * silu(z[i])
	}
}

// mamba2SSMStep advances a Mamba2 state (H, P, N) by one token and writes
// y (H·P) = S[h]·C[g] + D[h]·x[h]; head h uses group h / (H/G).
func mamba2SSMStep[F float](state, y, x, bm, cm, dtRaw, dtBias, a, d []F, heads, p, n, groups int) {
	per := heads / groups
	for h := range heads {
		g := h / per
		dt := softplus(dtRaw[h] + dtBias[h])
		decay := expF(dt * a[h])
		for pi := range p {
			xv := x[h*p+pi]
			row := state[(h*p+pi)*n : (h*p+pi+1)*n]
			var acc F
			for s := range n {
				row[s] = decay*row[s] + dt*xv*bm[g*n+s]
				acc += row[s] * cm[g*n+s]
			}
			y[h*p+pi] = acc + d[h]*xv
		}
	}
}
