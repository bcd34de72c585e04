package sharding

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/require"
)

// BenchmarkShardSplitJoin splits a (B, S, 8, 128) bf16 KV tensor over a
// dp=2, tp=4 mesh (batch over dp, kv heads over tp) and joins it back.
// SetBytes is the tensor's size, so MB/s is tensor bytes per second of
// the operation; copyref is copy() of the same bytes, for scale.
func BenchmarkShardSplitJoin(b *testing.B) {
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 4}, Devices: UniformDevices(8, 1<<34)})
	require.NoError(b, err)
	spec := Spec{{DP}, nil, {TP}, nil}
	for _, size := range []struct{ batch, seq int }{{2, 256}, {8, 2048}} {
		shape := []int{size.batch, size.seq, 8, 128}
		raw := make([]byte, size.batch*size.seq*8*128*2)
		rand.New(rand.NewSource(1)).Read(raw)
		x := tensor.Must(tensor.FromBytes(tensor.BFloat16, raw, shape...))
		parts, err := Split(x, spec, m)
		require.NoError(b, err)
		name := fmt.Sprintf("%dx%dx8x128_bf16_dp2_tp4", size.batch, size.seq)

		b.Run(name+"/split", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Split(x, spec, m); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/join", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Join(parts, spec, m, shape); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/roundtrip", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				p, err := Split(x, spec, m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Join(p, spec, m, shape); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/copyref", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				dst := make([]byte, len(raw))
				copy(dst, raw)
			}
		})
	}
}
