package actors

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/sharding"
)

// The decode-step budget (issue 5, DESIGN section 7): one decode step of
// 32 layers at batch 64 through the actors costs at most 2x the same
// writes fanned out with plain goroutines and a WaitGroup, measured in the
// same run:
//
//	go test -run XXX -bench 'Step(Actors|Goroutines)' -benchtime=2s -count=3 ./actors
//
// Both write one bf16 token per row and layer (4 kv heads of dim 64), into
// a contiguous cache of S = 128 (a fresh one every 128 steps) or a paged
// cache (64 decode slots with 4 pages of 16 tokens each: a fresh pool
// every 64 steps), re-created with the timer stopped. Each reports the
// median and 99th-percentile step latency (p50-ns, p99-ns) next to ns/op.
const (
	stepLayers, stepBatch, stepHeads, stepDim = 32, 64, 4, 64
	stepSeqLen                                = 128 // contiguous cache length
	stepPageSize, stepMaxLen                  = 16, 64
	stepPagesPerSeq                           = stepMaxLen / stepPageSize
)

// stepBench is one way of taking decode steps on one kind of cache.
type stepBench interface {
	// lap is the number of steps a fresh cache takes before it is full.
	lap() int
	// reset replaces the cache with a fresh, empty one (off the clock).
	reset(b *testing.B)
	// step takes decode step i of the current lap (position i of every row).
	step(i int) error
}

// runStepBench times b.N steps of s, one op per step, and reports the
// p50 and p99 of the per-step latencies.
func runStepBench(b *testing.B, s stepBench) {
	b.SetBytes(int64(2 * stepLayers * stepBatch * stepHeads * stepDim * tensor.BFloat16.Size()))
	b.ReportAllocs()
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i%s.lap() == 0 {
			b.StopTimer()
			s.reset(b)
			b.StartTimer()
		}
		t0 := time.Now()
		if err := s.step(i % s.lap()); err != nil {
			b.Fatalf("step %d: %v", i, err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[(len(lat)-1)*50/100].Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(lat[(len(lat)-1)*99/100].Nanoseconds()), "p99-ns")
}

// stepToken returns a (shape) bf16 tensor of distinct values.
func stepToken(shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%97) / 16
	}
	return tensor.Must(tensor.FromFloat32s(tensor.BFloat16, vals, shape...))
}

func stepTransformerMeta(b *testing.B) transformer.Metadata {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: stepBatch, SequenceLength: stepSeqLen,
		NumHiddenLayers: stepLayers, NumHeads: transformer.Ptr(stepHeads), HeadDim: transformer.Ptr(stepDim)})
	require.NoError(b, err)
	return meta
}

// stepPagedMeta is the paged cache: slot s owns pages 1+4s .. 4+4s.
func stepPagedMeta(b *testing.B) paged.Metadata {
	meta := paged.Metadata{BatchSize: stepBatch, NumHiddenLayers: stepLayers, NumPagesPerLayer: stepBatch*stepPagesPerSeq + 1,
		NumPagesPerSequence: stepPagesPerSeq, MaxSequences: stepMaxLen, PageSize: stepPageSize,
		NumKVHeads: stepHeads, KVHeadDimSize: stepDim, HBMUtilization: 0.9}
	require.NoError(b, meta.Validate())
	return meta
}

// stepPagedSteps returns the step metadata of each position of a lap:
// every slot decodes its token at that position through its page table.
func stepPagedSteps() []paged.StepMetadata {
	tables := make([][]int32, stepBatch)
	for s := range tables {
		for p := range stepPagesPerSeq {
			tables[s] = append(tables[s], int32(1+s*stepPagesPerSeq+p))
		}
	}
	out := make([]paged.StepMetadata, stepMaxLen)
	for pos := range out {
		positions := make([]int32, stepBatch)
		for s := range positions {
			positions[s] = int32(pos)
		}
		out[pos] = paged.StepMetadata{DecodesPosition: positions, DecodesPageTable: tables}
	}
	return out
}

// actorStep takes each step with Cache.Step on a cache of the runtime.
type actorStep struct {
	rt     *Runtime
	spec   Spec
	writes [][]LayerWrite // per step of a lap (one entry if every step writes the same)
	steps  int
	c      *Cache
	base   uint64
	made   int
}

func (a *actorStep) lap() int { return a.steps }

func (a *actorStep) reset(b *testing.B) {
	if a.c != nil {
		require.NoError(b, a.c.Close())
		a.c = nil
	}
	runtime.GC() // drop the previous cache before timing the next
	var err error
	a.made++
	a.c, err = a.rt.NewCache(fmt.Sprintf("bench-%d", a.made), a.spec)
	require.NoError(b, err)
	a.base = 0
}

func (a *actorStep) step(i int) error {
	v, _, err := a.c.Step(context.Background(), a.base, a.writes[i%len(a.writes)])
	a.base = v
	return err
}

// newActorStep returns an actorStep on a runtime closed with b.
func newActorStep(b *testing.B, spec Spec, steps int, writes [][]LayerWrite, opts ...Option) *actorStep {
	rt, err := NewRuntime(opts...)
	require.NoError(b, err)
	b.Cleanup(func() { _ = rt.Close() })
	return &actorStep{rt: rt, spec: spec, writes: writes, steps: steps}
}

// transformerWrites is one decode step of every layer of the contiguous
// cache.
func transformerWrites() []LayerWrite {
	x := stepToken(stepBatch, 1, stepHeads, stepDim)
	ws := make([]LayerWrite, stepLayers)
	for l := range ws {
		ws[l] = LayerWrite{Layer: l, Write: &TransformerWrite{Key: x, Value: x}}
	}
	return ws
}

// pagedWrites is every step of a lap of the paged cache.
func pagedWrites() [][]LayerWrite {
	k := stepToken(stepBatch, stepHeads, stepDim)
	out := [][]LayerWrite{}
	for _, st := range stepPagedSteps() {
		ws := make([]LayerWrite, stepLayers)
		for l := range ws {
			ws[l] = LayerWrite{Layer: l, Write: &PagedWrite{DecodeKey: k, DecodeValue: k, Step: st}}
		}
		out = append(out, ws)
	}
	return out
}

// BenchmarkStepActors takes decode steps through the runtime: Cache.Step
// fans the 32 layer writes out to the layer actors and publishes each
// version.
func BenchmarkStepActors(b *testing.B) {
	b.Run(fmt.Sprintf("transformer/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		spec := Spec{Transformer: &TransformerSpec{Metadata: stepTransformerMeta(b), DType: tensor.BFloat16}}
		runStepBench(b, newActorStep(b, spec, stepSeqLen, [][]LayerWrite{transformerWrites()}))
	})
	b.Run(fmt.Sprintf("paged/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		spec := Spec{Paged: &PagedSpec{Metadata: stepPagedMeta(b), DType: tensor.BFloat16}}
		runStepBench(b, newActorStep(b, spec, stepMaxLen, pagedWrites()))
	})
	// The contiguous step with metrics on (an OpenTelemetry SDK provider):
	// what recording costs per step.
	b.Run(fmt.Sprintf("transformer-metered/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		spec := Spec{Transformer: &TransformerSpec{Metadata: stepTransformerMeta(b), DType: tensor.BFloat16}}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		runStepBench(b, newActorStep(b, spec, stepSeqLen, [][]LayerWrite{transformerWrites()}, WithMeterProvider(mp)))
	})
}

// BenchmarkStepShardedActors is BenchmarkStepActors's contiguous step on a
// cache sharded over dp=2 × tp=2 (batch rows and kv heads cut): each layer
// actor fans its write out to 4 shard actors. It is not part of the
// budget (nothing plain to compare it with); it shows what the second
// fan-out costs.
func BenchmarkStepShardedActors(b *testing.B) {
	b.Run(fmt.Sprintf("transformer-dp=2-tp=2/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		mesh, err := sharding.NewMesh(sharding.MeshConfig{Sizes: map[string]int{sharding.DP: 2, sharding.FSDP: 1, sharding.TP: 2},
			Devices: sharding.UniformDevices(4, 1<<30)})
		require.NoError(b, err)
		pa := sharding.DefaultPartitionAxis()
		pa.KVHeadAxis, pa.DecodeKVHeadAxis = sharding.MeshAxes{sharding.TP}, sharding.MeshAxes{sharding.TP}
		spec := Spec{Transformer: &TransformerSpec{Metadata: stepTransformerMeta(b), DType: tensor.BFloat16}, Mesh: &mesh, PartitionAxis: &pa}
		runStepBench(b, newActorStep(b, spec, stepSeqLen, [][]LayerWrite{transformerWrites()}))
	})
}

// fanOut runs write(l) for every layer on its own goroutine and waits for
// all of them: the plain fan-out the budget compares the actors with.
func fanOut(write func(l int)) {
	var wg sync.WaitGroup
	wg.Add(stepLayers)
	for l := range stepLayers {
		go func() {
			defer wg.Done()
			write(l)
		}()
	}
	wg.Wait()
}

// firstError returns the first non-nil error, naming its layer.
func firstError(errs []error) error {
	for l, err := range errs {
		if err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
	}
	return nil
}

// goroutineTransformer takes the contiguous steps with ConcatenateToCache
// per layer; each step yields a new slice of views (the next version) and
// the results attention needs, as Cache.Step does.
type goroutineTransformer struct {
	meta    transformer.Metadata
	x       tensor.Tensor
	views   []transformer.View
	results []Result
}

func (g *goroutineTransformer) lap() int { return stepSeqLen }

func (g *goroutineTransformer) reset(b *testing.B) {
	g.views = nil
	runtime.GC()
	c, err := transformer.Init(g.meta, tensor.BFloat16, nil)
	require.NoError(b, err)
	for l := range stepLayers {
		v, err := c.View(l)
		require.NoError(b, err)
		g.views = append(g.views, v)
	}
}

func (g *goroutineTransformer) step(int) error {
	next := make([]transformer.View, stepLayers)
	results := make([]Result, stepLayers)
	errs := make([]error, stepLayers)
	fanOut(func(l int) {
		var r Result
		r.Key, r.Value, r.Mask, next[l], errs[l] = g.views[l].ConcatenateToCache(g.x, g.x, g.x, transformer.Mask{}, transformer.ConcatOptions{})
		results[l] = r
	})
	if err := firstError(errs); err != nil {
		return err
	}
	g.views, g.results = next, results
	return nil
}

// goroutinePaged takes the paged steps with WriteDecodes per layer.
type goroutinePaged struct {
	meta  paged.Metadata
	k     tensor.Tensor
	steps []paged.StepMetadata
	views []paged.View
}

func (g *goroutinePaged) lap() int { return stepMaxLen }

func (g *goroutinePaged) reset(b *testing.B) {
	g.views = nil
	runtime.GC()
	c, err := paged.Init(g.meta, tensor.BFloat16)
	require.NoError(b, err)
	for l := range stepLayers {
		v, err := c.View(l)
		require.NoError(b, err)
		g.views = append(g.views, v)
	}
}

func (g *goroutinePaged) step(i int) error {
	next := make([]paged.View, stepLayers)
	errs := make([]error, stepLayers)
	st := g.steps[i]
	fanOut(func(l int) { next[l], errs[l] = g.views[l].WriteDecodes(g.k, g.k, st) })
	if err := firstError(errs); err != nil {
		return err
	}
	g.views = next
	return nil
}

// BenchmarkStepGoroutines takes BenchmarkStepActors's steps with a plain
// fan-out: one goroutine per layer and a WaitGroup, producing the same new
// views.
func BenchmarkStepGoroutines(b *testing.B) {
	b.Run(fmt.Sprintf("transformer/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		runStepBench(b, &goroutineTransformer{meta: stepTransformerMeta(b), x: stepToken(stepBatch, 1, stepHeads, stepDim)})
	})
	b.Run(fmt.Sprintf("paged/layers=%d/batch=%d", stepLayers, stepBatch), func(b *testing.B) {
		runStepBench(b, &goroutinePaged{meta: stepPagedMeta(b), k: stepToken(stepBatch, stepHeads, stepDim), steps: stepPagedSteps()})
	})
}
