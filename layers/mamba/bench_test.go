package mamba

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// benchSizes are (batch, intermediate_size) pairs; N = 16, K = 4 (Mamba's
// defaults).
var benchSizes = []struct{ b, i int }{{1, 1536}, {16, 1536}, {64, 5120}}

func BenchmarkUpdateConvState(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("B%d_I%d", sz.b, sz.i), func(b *testing.B) {
			v, err := NewView(testMeta(b, 1, sz.b, sz.i, 16, 4), tensor.BFloat16, nil)
			require.NoError(b, err)
			x := testkit.Constant(tensor.BFloat16, 1, sz.b, sz.i)
			b.SetBytes(int64(v.ConvStates().NumBytes()))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if v, err = v.UpdateConvState(x, 3); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkUpdateSSMState(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("B%d_I%d", sz.b, sz.i), func(b *testing.B) {
			v, err := NewView(testMeta(b, 1, sz.b, sz.i, 16, 4), tensor.BFloat16, nil)
			require.NoError(b, err)
			h := testkit.Constant(tensor.BFloat16, 1, sz.b, sz.i, 16)
			b.SetBytes(int64(v.SSMStates().NumBytes()))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if v, err = v.UpdateSSMState(h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkResetRows(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(fmt.Sprintf("B%d_I%d", sz.b, sz.i), func(b *testing.B) {
			v, err := NewView(testMeta(b, 1, sz.b, sz.i, 16, 4), tensor.BFloat16, nil)
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				if _, err = v.ResetRows(0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
