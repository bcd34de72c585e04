package paged

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// BenchmarkQuantizedPagedDecodeWrite writes one decode token for each of 8
// sequences (8 kv heads, head dim 128, page size 16) per op into pools
// stored as bfloat16, or int8 or NF4 (block 64) with bfloat16 scales: the
// paged counterpart of the transformer's BenchmarkQuantizedDecodeWrite. Each
// op appends at offset i%16 of fresh pages, 16 ops per page, from a pool of
// 8·256 pages remade (timer stopped) when it runs out. SetBytes counts the
// input bytes (bf16 K and V).
func BenchmarkQuantizedPagedDecodeWrite(b *testing.B) {
	const batch, h, d, ps, pages = 8, 8, 128, 16, 8*256 + 1
	for _, s := range []struct {
		name string
		st   Storage
	}{
		{"bf16", Storage{DType: tensor.BFloat16}},
		{"int8", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}},
		{"nf4", Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}},
	} {
		b.Run(s.name, func(b *testing.B) {
			meta := benchMetadata(b, batch, pages, ps, h, d, ps)
			newPool := func() View {
				v, err := NewViewStorage(meta, s.st, 0)
				require.NoError(b, err)
				return v
			}
			m := StepMetadata{DecodesPosition: make([]int32, batch), DecodesPageTable: make([][]int32, batch)}
			for i := range batch {
				m.DecodesPageTable[i] = make([]int32, 1)
			}
			k, val := benchKV(b, batch, h, d), benchKV(b, batch, h, d)
			b.SetBytes(int64(2 * batch * h * d * tensor.BFloat16.Size()))
			b.ReportAllocs()
			v, fresh := newPool(), 1
			b.ResetTimer()
			for i := range b.N {
				if i%ps == 0 { // fresh pages for every sequence
					if fresh+batch > pages {
						b.StopTimer()
						v, fresh = newPool(), 1
						b.StartTimer()
					}
					for j := range batch {
						m.DecodesPageTable[j][0] = int32(fresh)
						fresh++
					}
				}
				for j := range batch {
					m.DecodesPosition[j] = int32(i % ps)
				}
				next, err := v.WriteDecodes(k, val, m)
				if err != nil {
					b.Fatal(err)
				}
				v = next
			}
		})
	}
}
