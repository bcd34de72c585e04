package actors

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// The decode-step budget (DESIGN section 7): a step through the actors of
// 32 layers at batch 64 costs at most 2x the same fan-out with plain
// goroutines, measured in the same run.
const (
	benchLayers, benchBatch, benchS, benchH, benchD = 32, 64, 128, 4, 64
)

func benchMeta(b *testing.B) transformer.Metadata {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: benchBatch, SequenceLength: benchS,
		NumHiddenLayers: benchLayers, NumHeads: transformer.Ptr(benchH), HeadDim: transformer.Ptr(benchD)})
	require.NoError(b, err)
	return meta
}

func benchToken(b *testing.B) tensor.Tensor {
	vals := make([]float32, benchBatch*benchH*benchD)
	for i := range vals {
		vals[i] = float32(i%97) / 16
	}
	x, err := tensor.FromFloat32s(tensor.BFloat16, vals, benchBatch, 1, benchH, benchD)
	require.NoError(b, err)
	return x
}

func BenchmarkDecodeStep(b *testing.B) {
	meta, x := benchMeta(b), benchToken(b)
	writes := make([]LayerWrite, benchLayers)
	for l := range writes {
		writes[l] = LayerWrite{Layer: l, Write: &TransformerWrite{Key: x, Value: x}}
	}
	bytes := int64(2 * benchLayers * x.NumBytes())

	b.Run(fmt.Sprintf("actors/layers=%d/batch=%d", benchLayers, benchBatch), func(b *testing.B) {
		rt, err := NewRuntime()
		require.NoError(b, err)
		defer rt.Close()
		ctx := context.Background()
		var c *Cache
		var base uint64
		b.SetBytes(bytes)
		b.ReportAllocs()
		for i := range b.N {
			if i%benchS == 0 { // the cache is full: a fresh one, off the clock
				b.StopTimer()
				if c != nil {
					require.NoError(b, c.Close())
				}
				c, err = rt.NewCache(fmt.Sprintf("bench%d", i), Spec{Transformer: &TransformerSpec{Metadata: meta, DType: tensor.BFloat16}})
				require.NoError(b, err)
				base = 0
				b.StartTimer()
			}
			if base, _, err = c.Step(ctx, base, writes); err != nil {
				b.Fatal(err)
			}
		}
	})

	// The same step on a cache sharded over dp=2 × tp=2 (batch rows and kv
	// heads cut): each layer actor fans its write out to 4 shard actors.
	// Not part of the budget; it shows what the second fan-out costs.
	b.Run(fmt.Sprintf("actors-sharded-dp=2-tp=2/layers=%d/batch=%d", benchLayers, benchBatch), func(b *testing.B) {
		rt, err := NewRuntime()
		require.NoError(b, err)
		defer rt.Close()
		mesh := testMesh(b, 2, 2)
		ctx := context.Background()
		var c *Cache
		var base uint64
		b.SetBytes(bytes)
		b.ReportAllocs()
		for i := range b.N {
			if i%benchS == 0 {
				b.StopTimer()
				if c != nil {
					require.NoError(b, c.Close())
				}
				c, err = rt.NewCache(fmt.Sprintf("bench%d", i), Spec{Transformer: &TransformerSpec{Metadata: meta, DType: tensor.BFloat16},
					Mesh: &mesh, PartitionAxis: kvHeadsOverTP()})
				require.NoError(b, err)
				base = 0
				b.StartTimer()
			}
			if base, _, err = c.Step(ctx, base, writes); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run(fmt.Sprintf("goroutines/layers=%d/batch=%d", benchLayers, benchBatch), func(b *testing.B) {
		var views []transformer.View
		next := make([]transformer.View, benchLayers)
		errs := make([]error, benchLayers)
		b.SetBytes(bytes)
		b.ReportAllocs()
		for i := range b.N {
			if i%benchS == 0 {
				b.StopTimer()
				c, err := transformer.Init(meta, tensor.BFloat16, nil)
				require.NoError(b, err)
				views = views[:0]
				for l := range benchLayers {
					v, _ := c.View(l)
					views = append(views, v)
				}
				b.StartTimer()
			}
			var wg sync.WaitGroup
			for l := range benchLayers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w := writes[l].Write.(*TransformerWrite)
					_, _, _, next[l], errs[l] = views[l].ConcatenateToCache(w.Key, w.Key, w.Value, transformer.Mask{}, transformer.ConcatOptions{})
				}()
			}
			wg.Wait()
			for l, err := range errs {
				if err != nil {
					b.Fatalf("layer %d: %v", l, err)
				}
			}
			views = append(views[:0], next...) // the new version
		}
	})
}
