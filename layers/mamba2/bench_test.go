package mamba2

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// benchDims are Mamba2-like sizes: head_dim 64, state 128, kernel 4, 1 group.
var benchDims = []dims{
	{layers: 1, b: 1, i: 1536, h: 24, p: 64, n: 128, k: 4, g: 1},
	{layers: 1, b: 16, i: 1536, h: 24, p: 64, n: 128, k: 4, g: 1},
	{layers: 1, b: 64, i: 1536, h: 24, p: 64, n: 128, k: 4, g: 1},
}

func BenchmarkUpdateConvState(b *testing.B) {
	for _, d := range benchDims {
		b.Run(fmt.Sprintf("B%d_C%d", d.b, d.i+2*d.g*d.n), func(b *testing.B) {
			m := testMeta(b, d)
			v, err := NewView(m, tensor.BFloat16, nil)
			require.NoError(b, err)
			x := testkit.Constant(tensor.BFloat16, 1, d.b, m.ConvDim())
			b.SetBytes(int64(v.ConvStates().NumBytes()))
			b.ReportAllocs()
			for b.Loop() {
				if v, err = v.UpdateConvState(x, 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUpdateSSMState(b *testing.B) {
	for _, d := range benchDims {
		b.Run(fmt.Sprintf("B%d_H%d", d.b, d.h), func(b *testing.B) {
			v, err := NewView(testMeta(b, d), tensor.BFloat16, nil)
			require.NoError(b, err)
			s := testkit.Constant(tensor.BFloat16, 1, d.b, d.h, d.p, d.n)
			b.SetBytes(int64(v.SSMStates().NumBytes()))
			b.ReportAllocs()
			for b.Loop() {
				if v, err = v.UpdateSSMState(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
