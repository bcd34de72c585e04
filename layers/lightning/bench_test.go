package lightning

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/internal/testkit"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// BenchmarkUpdate measures a decode step (one token) on states of
// (B, H, D, D), MiniMax-like head dims.
func BenchmarkUpdate(b *testing.B) {
	for _, sz := range []struct{ b, h, d int }{{1, 8, 64}, {8, 8, 64}, {16, 16, 128}} {
		b.Run(fmt.Sprintf("B%d_H%d_D%d", sz.b, sz.h, sz.d), func(b *testing.B) {
			v, err := NewView(testMeta(b, sz.b, sz.h, sz.d), tensor.Float32, nil)
			require.NoError(b, err)
			k := testkit.Constant(tensor.Float32, 0.5, sz.b, sz.h, 1, sz.d)
			slopes, err := SlopeRates(sz.h, 0, 2)
			require.NoError(b, err)
			if v, err = v.Update(k, k, slopes); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(v.KeyValue().NumBytes()))
			b.ReportAllocs()
			for b.Loop() {
				if v, err = v.Update(k, k, slopes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
