package budget

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// ErrBenchTime reports a benchmark time that testing.Benchmark does not
// understand.
var ErrBenchTime = errors.New("budget: bad bench time")

// Result is one budget: what was measured, the ratio or rate compared with
// the limit, and whether it holds. A budget that cannot be measured here
// has NA set and no verdict.
type Result struct {
	// Name says what the budget bounds.
	Name string `json:"name"`
	// Measured gives the two measurements (or the rate) in words.
	Measured string `json:"measured"`
	// Value is the measured ratio or rate, compared with Limit.
	Value float64 `json:"value"`
	// Limit is the budget, e.g. "<= 1.30" or ">= 20M pairs/s".
	Limit string `json:"limit"`
	// Pass reports that Value is within Limit.
	Pass bool `json:"pass"`
	// NA says why the budget was not measured (then Pass is false and
	// means nothing).
	NA string `json:"na,omitempty"`
}

// Options configure a measurement run.
type Options struct {
	// BenchTime is testing's -benchtime for each benchmark: a duration
	// ("300ms") or an iteration count ("100x"). Empty means 300ms.
	BenchTime string
	// Progress, when set, is called with each budget's name before it is
	// measured.
	Progress func(name string)
}

var benchMu sync.Mutex // testing.Benchmark reads a process-wide bench time

// Measure runs every budget's benchmarks and returns the results in
// DESIGN.md's order. It takes a few seconds per budget at the default bench
// time and allocates up to a few hundred MB (a paged pool and a 32k-token
// contiguous cache).
func Measure(opts Options) ([]Result, error) {
	bt := opts.BenchTime
	if bt == "" {
		bt = "300ms"
	}
	benchMu.Lock()
	defer benchMu.Unlock()
	testing.Init()
	f := flag.Lookup("test.benchtime")
	if f == nil {
		return nil, fmt.Errorf("%w: testing registers no -test.benchtime flag", ErrBenchTime)
	}
	old := f.Value.String()
	if err := f.Value.Set(bt); err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrBenchTime, bt, err)
	}
	defer func() { _ = f.Value.Set(old) }()
	var out []Result
	for _, m := range []struct {
		name string
		run  func(string) (Result, error)
	}{
		{"decode write at 32k vs 128 context (contiguous)", decodeContiguous},
		{"decode write at 32k vs 128 context (paged)", decodePaged},
		{"prefill write vs copy() bandwidth (paged, 2048 tokens)", prefillVsCopy},
		{"page pool alloc+free (Pool.Add and Pool.Free of 256 pages)", poolAllocFree},
		{"decode step, actors vs goroutines (contiguous, 32 layers, batch 64)", stepTransformer},
		{"decode step, actors vs goroutines (paged, 32 layers, batch 64)", stepPaged},
		{transferName, kvTransfer},
	} {
		if opts.Progress != nil {
			opts.Progress(m.name)
		}
		if raceBuild && m.name == transferName {
			out = append(out, Result{Name: m.name, Limit: ">= 0.50", NA: "n/a in a race-detector build (protoactor's remote races inside the library)"})
			continue
		}
		r, err := m.run(m.name)
		if err != nil {
			return out, fmt.Errorf("%s: %w", m.name, err)
		}
		out = append(out, r)
		runtime.GC()
	}
	return out, nil
}

// bench runs f under testing.Benchmark and returns ns/op, or the first
// error f reported.
func bench(f func(b *testing.B) error) (float64, testing.BenchmarkResult, error) {
	var err error
	var mu sync.Mutex
	r := testing.Benchmark(func(b *testing.B) {
		if e := f(b); e != nil {
			mu.Lock()
			err = e
			mu.Unlock()
			b.SkipNow()
		}
	})
	if err != nil {
		return 0, r, err
	}
	if r.N == 0 {
		return 0, r, errors.New("the benchmark ran no iteration")
	}
	return float64(r.T.Nanoseconds()) / float64(r.N), r, nil
}

// ratioResult is the budget a/b <= limit, a and b in ns per op, labelled
// aName and bName.
func ratioResult(name, aName, bName string, a, b float64, limit float64) Result {
	ratio := a / b
	return Result{Name: name, Measured: fmt.Sprintf("%s %s vs %s %s", aName, dur(a), bName, dur(b)), Value: ratio,
		Limit: fmt.Sprintf("<= %.2f", limit), Pass: ratio <= limit}
}

// dur formats ns nanoseconds with three significant digits.
func dur(ns float64) string {
	switch {
	case ns >= 1e6:
		return fmt.Sprintf("%.3gms", ns/1e6)
	case ns >= 1e3:
		return fmt.Sprintf("%.3gµs", ns/1e3)
	}
	return fmt.Sprintf("%.3gns", ns)
}

// tokens returns a bf16 tensor of the shape with distinct values.
func tokens(shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%251) / 8
	}
	return tensor.Must(tensor.FromFloat32s(tensor.BFloat16, vals, shape...))
}

// The decode-write shape of the budget: batch 8, 8 kv heads, head dim 128,
// bf16; positions [N-64, N) are written again and again.
const decB, decH, decD, decWindow = 8, 8, 128, 64

func decodeContiguous(name string) (Result, error) {
	run := func(n int) (float64, error) {
		ns, _, err := bench(func(b *testing.B) error {
			meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: decB, SequenceLength: n, NumHiddenLayers: 1,
				NumHeads: transformer.Ptr(decH), HeadDim: transformer.Ptr(decD)})
			if err != nil {
				return err
			}
			c, err := transformer.Init(meta, tensor.BFloat16, nil)
			if err != nil {
				return err
			}
			rewind := make([]int32, decB)
			for i := range rewind {
				rewind[i] = int32(n - decWindow)
			}
			if c, err = c.InsertIndex(rewind, 0); err != nil {
				return err
			}
			v, err := c.View(0)
			if err != nil {
				return err
			}
			tok := tokens(decB, 1, decH, decD)
			b.ResetTimer()
			for i := range b.N {
				if i > 0 && i%decWindow == 0 { // the rows are full: back to N-64
					if c, err = c.WithView(0, v); err == nil {
						if c, err = c.InsertIndex(rewind, 0); err == nil {
							v, err = c.View(0)
						}
					}
					if err != nil {
						return err
					}
				}
				if v, err = v.Append(tok, tok); err != nil {
					return err
				}
			}
			return nil
		})
		return ns, err
	}
	small, err := run(128)
	if err != nil {
		return Result{}, err
	}
	large, err := run(32768)
	if err != nil {
		return Result{}, err
	}
	return ratioResult(name, "View.Append at 32k", "at 128", large, small, 1.3), nil
}

func decodePaged(name string) (Result, error) {
	const ps, pages = 16, 1025 // the same pool (64 MiB) for both contexts
	run := func(ctx int) (float64, error) {
		ns, _, err := bench(func(b *testing.B) error {
			perSeq := ctx / ps
			meta := paged.Metadata{BatchSize: decB, NumHiddenLayers: 1, NumPagesPerLayer: pages, NumPagesPerSequence: perSeq,
				MaxSequences: ctx, PageSize: ps, NumKVHeads: decH, KVHeadDimSize: decD, HBMUtilization: 0.9}
			newPool := func() (paged.View, error) {
				runtime.GC()
				return paged.NewView(meta, tensor.BFloat16, 0)
			}
			v, err := newPool()
			if err != nil {
				return err
			}
			m := paged.StepMetadata{DecodesPosition: make([]int32, decB), DecodesPageTable: make([][]int32, decB)}
			for s := range decB {
				m.DecodesPageTable[s] = make([]int32, perSeq)
			}
			k := tokens(decB, decH, decD)
			fresh := 1
			b.ResetTimer()
			for i := range b.N {
				if i%decWindow == 0 { // a new lap: fresh pages for the window, as a page manager hands them out
					if fresh+decB*decWindow/ps > pages {
						b.StopTimer()
						if v, err = newPool(); err != nil {
							return err
						}
						fresh = 1
						b.StartTimer()
					}
					for s := range decB {
						for lp := perSeq - decWindow/ps; lp < perSeq; lp++ {
							m.DecodesPageTable[s][lp] = int32(fresh)
							fresh++
						}
					}
				}
				for s := range decB {
					m.DecodesPosition[s] = int32(ctx - decWindow + i%decWindow)
				}
				if v, err = v.WriteDecodes(k, k, m); err != nil {
					return err
				}
			}
			return nil
		})
		return ns, err
	}
	small, err := run(128)
	if err != nil {
		return Result{}, err
	}
	large, err := run(32768)
	if err != nil {
		return Result{}, err
	}
	return ratioResult(name, "View.WriteDecodes at 32k", "at 128", large, small, 1.3), nil
}

func prefillVsCopy(name string) (Result, error) {
	const t, h, d, ps = 2048, 8, 128, 16
	bytes := 2 * t * h * d * tensor.BFloat16.Size()
	perSeq := t / ps
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: perSeq + 1, NumPagesPerSequence: perSeq,
		MaxSequences: t, PageSize: ps, NumKVHeads: h, KVHeadDimSize: d, HBMUtilization: 0.9}
	table := make([]int32, perSeq)
	for i := range table {
		table[i] = int32(1 + i)
	}
	k := tokens(t, h, d)
	write, _, err := bench(func(b *testing.B) error {
		for range b.N {
			b.StopTimer()
			v, err := paged.NewView(meta, tensor.BFloat16, 0) // fresh pages, as a request gets them
			if err != nil {
				return err
			}
			b.StartTimer()
			if _, err := v.WritePrefill(k, k, paged.StepMetadata{PrefillLength: t, PrefillPageTable: table}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	src, dst := make([]byte, bytes), make([]byte, bytes)
	for i := range src {
		src[i] = byte(i)
	}
	cp, _, err := bench(func(b *testing.B) error {
		for range b.N {
			copy(dst, src)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	rate := func(ns float64) string { return fmt.Sprintf("%.2f GB/s", float64(bytes)/ns) }
	ratio := cp / write // bandwidth ratio
	return Result{Name: name, Measured: fmt.Sprintf("WritePrefill %s vs copy() %s", rate(write), rate(cp)),
		Value: ratio, Limit: ">= 0.50", Pass: ratio >= 0.5}, nil
}

func poolAllocFree(name string) (Result, error) {
	const pages = 256
	ns, _, err := bench(func(b *testing.B) error {
		p, err := pagemanager.NewPool(pagemanager.PoolConfig{NumPages: 1024, PageSize: 16})
		if err != nil {
			return err
		}
		for id := range pagemanager.SeqID(64) { // other sequences hold pages too
			if _, err := p.Add(1000+id, pagemanager.Request{Tokens: make([]int32, 16)}); err != nil {
				return err
			}
		}
		req := pagemanager.Request{Tokens: make([]int32, pages*16)}
		b.ResetTimer()
		for range b.N {
			if _, err := p.Add(1, req); err != nil {
				return err
			}
			if err := p.Free(1); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	rate := pages / ns * 1e9
	return Result{Name: name, Measured: fmt.Sprintf("%.1fM page pairs/s (%s per Add+Free)", rate/1e6, dur(ns)),
		Value: rate, Limit: ">= 20M pairs/s", Pass: rate >= 20e6}, nil
}

// The decode-step shape of the budget: 32 layers, batch 64, 4 kv heads of
// dim 64, bf16, one token per row and layer.
const stepL, stepB, stepH, stepD = 32, 64, 4, 64

// stepper takes decode steps on a cache; reset makes a fresh one.
type stepper struct {
	lap   int
	reset func() error
	step  func(i int) error
}

func runSteps(s stepper) (float64, error) {
	ns, _, err := bench(func(b *testing.B) error {
		for i := range b.N {
			if i%s.lap == 0 {
				b.StopTimer()
				runtime.GC()
				if err := s.reset(); err != nil {
					return err
				}
				b.StartTimer()
			}
			if err := s.step(i % s.lap); err != nil {
				return err
			}
		}
		return nil
	})
	return ns, err
}

// fanOut runs write(l) for every layer on its own goroutine and waits.
func fanOut(write func(l int) error) error {
	errs := make([]error, stepL)
	var wg sync.WaitGroup
	for l := range stepL {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[l] = write(l)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// actorStepper takes each step with Cache.Step on a fresh cache of rt.
func actorStepper(rt *actors.Runtime, spec actors.Spec, lap int, writes func(i int) []actors.LayerWrite) stepper {
	var c *actors.Cache
	var base uint64
	made := 0
	return stepper{lap: lap,
		reset: func() error {
			if c != nil {
				_ = c.Close()
			}
			made++
			var err error
			c, err = rt.NewCache(fmt.Sprintf("bench-%d", made), spec)
			base = 0
			return err
		},
		step: func(i int) error {
			v, _, err := c.Step(context.Background(), base, writes(i))
			base = v
			return err
		}}
}

func compareSteps(name string, actorSide, goSide stepper) (Result, error) {
	a, err := runSteps(actorSide)
	if err != nil {
		return Result{}, err
	}
	g, err := runSteps(goSide)
	if err != nil {
		return Result{}, err
	}
	return ratioResult(name, "actors", "goroutines", a, g, 2), nil
}

func stepTransformer(name string) (Result, error) {
	const seqLen = 128
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: stepB, SequenceLength: seqLen, NumHiddenLayers: stepL,
		NumHeads: transformer.Ptr(stepH), HeadDim: transformer.Ptr(stepD)})
	if err != nil {
		return Result{}, err
	}
	x := tokens(stepB, 1, stepH, stepD)
	writes := make([]actors.LayerWrite, stepL)
	for l := range writes {
		writes[l] = actors.LayerWrite{Layer: l, Write: &actors.TransformerWrite{Key: x, Value: x}}
	}
	rt, err := actors.NewRuntime()
	if err != nil {
		return Result{}, err
	}
	defer rt.Close()
	var views []transformer.View
	goSide := stepper{lap: seqLen,
		reset: func() error {
			c, err := transformer.Init(meta, tensor.BFloat16, nil)
			if err != nil {
				return err
			}
			views = views[:0]
			for l := range stepL {
				v, err := c.View(l)
				if err != nil {
					return err
				}
				views = append(views, v)
			}
			return nil
		},
		step: func(int) error {
			next := make([]transformer.View, stepL)
			results := make([]actors.Result, stepL)
			err := fanOut(func(l int) (err error) {
				var r actors.Result
				r.Key, r.Value, r.Mask, next[l], err = views[l].ConcatenateToCache(x, x, x, transformer.Mask{}, transformer.ConcatOptions{})
				results[l] = r
				return err
			})
			views = next
			return err
		}}
	return compareSteps(name, actorStepper(rt, actors.Spec{Transformer: &actors.TransformerSpec{Metadata: meta, DType: tensor.BFloat16}},
		seqLen, func(int) []actors.LayerWrite { return writes }), goSide)
}

func stepPaged(name string) (Result, error) {
	const ps, maxLen = 16, 64
	perSeq := maxLen / ps
	meta := paged.Metadata{BatchSize: stepB, NumHiddenLayers: stepL, NumPagesPerLayer: stepB*perSeq + 1, NumPagesPerSequence: perSeq,
		MaxSequences: maxLen, PageSize: ps, NumKVHeads: stepH, KVHeadDimSize: stepD, HBMUtilization: 0.9}
	if err := meta.Validate(); err != nil {
		return Result{}, err
	}
	tables := make([][]int32, stepB)
	for s := range tables {
		for p := range perSeq {
			tables[s] = append(tables[s], int32(1+s*perSeq+p))
		}
	}
	steps := make([]paged.StepMetadata, maxLen)
	for pos := range steps {
		positions := make([]int32, stepB)
		for s := range positions {
			positions[s] = int32(pos)
		}
		steps[pos] = paged.StepMetadata{DecodesPosition: positions, DecodesPageTable: tables}
	}
	k := tokens(stepB, stepH, stepD)
	writes := make([][]actors.LayerWrite, maxLen)
	for pos := range writes {
		for l := range stepL {
			writes[pos] = append(writes[pos], actors.LayerWrite{Layer: l, Write: &actors.PagedWrite{DecodeKey: k, DecodeValue: k, Step: steps[pos]}})
		}
	}
	rt, err := actors.NewRuntime()
	if err != nil {
		return Result{}, err
	}
	defer rt.Close()
	var views []paged.View
	goSide := stepper{lap: maxLen,
		reset: func() error {
			c, err := paged.Init(meta, tensor.BFloat16)
			if err != nil {
				return err
			}
			views = views[:0]
			for l := range stepL {
				v, err := c.View(l)
				if err != nil {
					return err
				}
				views = append(views, v)
			}
			return nil
		},
		step: func(i int) error {
			next := make([]paged.View, stepL)
			err := fanOut(func(l int) (err error) {
				next[l], err = views[l].WriteDecodes(k, k, steps[i])
				return err
			})
			views = next
			return err
		}}
	return compareSteps(name, actorStepper(rt, actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: tensor.BFloat16}},
		maxLen, func(i int) []actors.LayerWrite { return writes[i] }), goSide)
}
