package paged

import (
	"fmt"
	"runtime"
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
// of context N (8 kv heads, head dim 128, bf16, page size 16) per op, at the
// positions [N-64, N), chaining versions as a decode loop does. Each lap of
// 64 tokens maps those positions to pages no version has written yet, as a
// growing sequence gets them from the page manager; when the pool runs out,
// a new one is made with the timer stopped. Every context uses the same
// pool, sized for 8 sequences of the largest context (the pool is a memory
// budget, not a function of the context), so only the context differs. The
// budget (DESIGN section 7) is ns/op at ctx=32768 within 1.3x of ctx=128.
func BenchmarkPagedDecodeWrite(b *testing.B) {
	const batch, h, d, ps, window, maxCtx = 8, 8, 128, 16, 64, 32768
	for _, ctx := range []int{128, 2048, maxCtx} {
		b.Run(fmt.Sprintf("ctx=%d", ctx), func(b *testing.B) {
			perSeq := ctx / ps
			pages := batch*maxCtx/ps + 1
			meta := benchMetadata(b, batch, pages, ps, h, d, ctx)
			newPool := func() View {
				runtime.GC() // drop the previous pool (a gigabyte at 32k) outside the timed loop
				v, err := NewView(meta, tensor.BFloat16, 0)
				require.NoError(b, err)
				return v
			}
			m := StepMetadata{DecodesPosition: make([]int32, batch), DecodesPageTable: make([][]int32, batch)}
			for s := range batch {
				m.DecodesPageTable[s] = make([]int32, perSeq)
			}
			k, val := benchKV(b, batch, h, d), benchKV(b, batch, h, d)
			b.SetBytes(int64(2 * batch * h * d * tensor.BFloat16.Size()))
			b.ReportAllocs()
			v, fresh := newPool(), 1
			b.ResetTimer()
			for i := range b.N {
				if i%window == 0 { // a new lap: fresh pages for the last window/ps logical pages
					if fresh+batch*window/ps > pages {
						b.StopTimer()
						v, fresh = newPool(), 1
						b.StartTimer()
					}
					for s := range batch {
						for lp := perSeq - window/ps; lp < perSeq; lp++ {
							m.DecodesPageTable[s][lp] = int32(fresh)
							fresh++
						}
					}
				}
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

// prefillBench is the shape of the prefill benchmarks: one 2048-token
// sequence, 8 kv heads, head dim 128, bf16 in and out, page size 16.
const prefillT, prefillH, prefillD, prefillPS = 2048, 8, 128, 16

// BenchmarkPagedPrefillWrite writes a 2048-token prefill of one sequence
// per op into pages no version has written yet, the pages a request gets
// from a fresh pool. The pool is created before each op with the timer
// stopped; creating it touches its memory, so, like BenchmarkCopyBaseline's
// destination, it is warm in cache. Compare its MB/s with
// BenchmarkCopyBaseline's: the budget (DESIGN section 7) is >= 50%.
func BenchmarkPagedPrefillWrite(b *testing.B) {
	perSeq := prefillT / prefillPS
	meta := benchMetadata(b, 1, perSeq+1, prefillPS, prefillH, prefillD, prefillT)
	table := seqTables(1, perSeq)[0]
	k, val := benchKV(b, prefillT, prefillH, prefillD), benchKV(b, prefillT, prefillH, prefillD)
	b.SetBytes(int64(2 * prefillT * prefillH * prefillD * tensor.BFloat16.Size()))
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		v, err := NewView(meta, tensor.BFloat16, 0)
		require.NoError(b, err)
		b.StartTimer()
		if _, err := v.WritePrefill(k, val, StepMetadata{PrefillLength: prefillT, PrefillPageTable: table}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPagedPrefillRewrite writes the same prefill into pages that an
// older version holds (a pool of 4 sequences' pages, reused in turn), so
// every page is copied on write: the cost of keeping old versions intact
// when freed pages are reused.
func BenchmarkPagedPrefillRewrite(b *testing.B) {
	const seqs = 4
	perSeq := prefillT / prefillPS
	meta := benchMetadata(b, 1, seqs*perSeq+1, prefillPS, prefillH, prefillD, prefillT)
	v, err := NewView(meta, tensor.BFloat16, 0)
	require.NoError(b, err)
	tables := seqTables(seqs, perSeq)
	k, val := benchKV(b, prefillT, prefillH, prefillD), benchKV(b, prefillT, prefillH, prefillD)
	for i := range seqs { // every page written once before timing
		v, err = v.WritePrefill(k, val, StepMetadata{PrefillLength: prefillT, PrefillPageTable: tables[i]})
		require.NoError(b, err)
	}
	b.SetBytes(int64(2 * prefillT * prefillH * prefillD * tensor.BFloat16.Size()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		next, err := v.WritePrefill(k, val, StepMetadata{PrefillLength: prefillT, PrefillPageTable: tables[i%seqs]})
		if err != nil {
			b.Fatal(err)
		}
		v = next
	}
}

// seqTables gives sequence s the pages 1+s*perSeq ... (s+1)*perSeq.
func seqTables(seqs, perSeq int) [][]int32 {
	tables := make([][]int32, seqs)
	for s := range tables {
		tables[s] = make([]int32, perSeq)
		for p := range perSeq {
			tables[s][p] = int32(1 + s*perSeq + p)
		}
	}
	return tables
}

// BenchmarkCopyBaseline copies as many bytes as one BenchmarkPagedPrefillWrite
// op writes (K and V), with the built-in copy between two buffers.
func BenchmarkCopyBaseline(b *testing.B) {
	n := 2 * prefillT * prefillH * prefillD * tensor.BFloat16.Size()
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
