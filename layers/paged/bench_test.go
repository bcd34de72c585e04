package paged

import (
	"fmt"
	"testing"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/require"
)

// benchMetadata returns metadata for one layer whose pool holds exactly
// pages pages.
func benchMetadata(b *testing.B, batch, pages, ps, h, d, maxLen int) Metadata {
	m := Metadata{
		BatchSize: batch, NumHiddenLayers: 1, NumPagesPerLayer: pages,
		NumPagesPerSequence: (maxLen + ps - 1) / ps, MaxSequences: maxLen,
		PageSize: ps, NumKVHeads: h, KVHeadDimSize: d, HBMUtilization: 0.9,
	}
	require.NoError(b, m.Validate())
	return m
}

// benchKV returns a (rows, h, d) bf16 tensor of distinct values.
func benchKV(b *testing.B, rows, h, d int) tensor.Tensor {
	data := make([]float32, rows*h*d)
	for i := range data {
		data[i] = float32(i%251) / 8
	}
	return tensor.Must(tensor.FromFloat32s(tensor.BFloat16, data, rows, h, d))
}

// BenchmarkPagedDecodeWrite writes one decode token for each of 8 sequences
// of context N (8 kv heads, head dim 128, bf16, page size 16) per op,
// chaining versions over the positions [N-64, N). The budget (DESIGN
// section 7) is ns/op at ctx=32768 within 1.3x of ctx=128.
func BenchmarkPagedDecodeWrite(b *testing.B) {
	const batch, h, d, ps, window = 8, 8, 128, 16, 64
	for _, ctx := range []int{128, 2048, 32768} {
		b.Run(fmt.Sprintf("ctx=%d", ctx), func(b *testing.B) {
			perSeq := ctx / ps
			meta := benchMetadata(b, batch, batch*perSeq+1, ps, h, d, ctx)
			v, err := NewView(meta, tensor.BFloat16, 0)
			require.NoError(b, err)
			m := StepMetadata{DecodesPosition: make([]int32, batch), DecodesPageTable: make([][]int32, batch)}
			for s := range batch {
				m.DecodesPageTable[s] = make([]int32, perSeq)
				for p := range perSeq {
					m.DecodesPageTable[s][p] = int32(1 + s*perSeq + p)
				}
			}
			k, val := benchKV(b, batch, h, d), benchKV(b, batch, h, d)
			b.SetBytes(int64(2 * batch * h * d * tensor.BFloat16.Size()))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				pos := int32(ctx - window + i%window)
				for s := range batch {
					m.DecodesPosition[s] = pos
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

// BenchmarkPagedPrefillWrite writes a 2048-token prefill of one sequence
// (8 kv heads, head dim 128, bf16 in and out, page size 16) per op,
// chaining versions over a pool of 4 sequences' pages in turn, so every op
// rewrites pages an older version holds (a fresh pool per op would cost
// O(pool)). Compare its MB/s with BenchmarkCopyBaseline's: the budget
// (DESIGN section 7) is >= 50%.
func BenchmarkPagedPrefillWrite(b *testing.B) {
	const T, h, d, ps, seqs = 2048, 8, 128, 16, 4
	perSeq := T / ps
	meta := benchMetadata(b, 1, seqs*perSeq+1, ps, h, d, T)
	v, err := NewView(meta, tensor.BFloat16, 0)
	require.NoError(b, err)
	tables := make([][]int32, seqs)
	for s := range tables {
		tables[s] = make([]int32, perSeq)
		for p := range perSeq {
			tables[s][p] = int32(1 + s*perSeq + p)
		}
	}
	k, val := benchKV(b, T, h, d), benchKV(b, T, h, d)
	b.SetBytes(int64(2 * T * h * d * tensor.BFloat16.Size()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		m := StepMetadata{PrefillLength: T, PrefillPageTable: tables[i%seqs]}
		next, err := v.WritePrefill(k, val, m)
		if err != nil {
			b.Fatal(err)
		}
		v = next
	}
}

// BenchmarkCopyBaseline copies as many bytes as one BenchmarkPagedPrefillWrite
// op writes (K and V), with the built-in copy between two buffers.
func BenchmarkCopyBaseline(b *testing.B) {
	const T, h, d = 2048, 8, 128
	n := 2 * T * h * d * tensor.BFloat16.Size()
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	b.SetBytes(int64(n))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		copy(dst, src)
	}
}
