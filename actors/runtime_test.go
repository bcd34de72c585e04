package actors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

const (
	tB, tS, tH, tD, tL = 2, 8, 2, 4, 3
)

func newRuntime(t *testing.T, opts ...Option) *Runtime {
	t.Helper()
	rt, err := NewRuntime(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	return rt
}

// newTransformerCache returns cache "c" of transformerSpec on a new
// runtime with opts.
func newTransformerCache(t *testing.T, opts ...Option) *Cache {
	t.Helper()
	c, err := newRuntime(t, opts...).NewCache("c", transformerSpec(t))
	require.NoError(t, err)
	return c
}

func transformerSpec(t *testing.T) Spec {
	meta, err := transformer.NewMetadata(transformer.MetadataConfig{BatchSize: tB, SequenceLength: tS, NumHiddenLayers: tL,
		NumHeads: transformer.Ptr(tH), HeadDim: transformer.Ptr(tD)})
	require.NoError(t, err)
	return Spec{Transformer: &TransformerSpec{Metadata: meta, DType: tensor.Float32}}
}

// token returns a (B, 1, H, D) tensor whose values encode (step, layer).
func token(step, layer int) tensor.Tensor {
	vals := make([]float64, tB*tH*tD)
	for i := range vals {
		vals[i] = float64(step*1000 + layer*100 + i)
	}
	return tensor.Must(tensor.FromFloat64s(tensor.Float32, vals, tB, 1, tH, tD))
}

func decodeStep(step int) []LayerWrite {
	ws := make([]LayerWrite, tL)
	for l := range ws {
		x := token(step, l)
		ws[l] = LayerWrite{Layer: l, Write: &TransformerWrite{Key: x, Value: x}}
	}
	return ws
}

func TestStepMatchesTheCoreAndPublishesVersions(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()

	// The same writes applied directly to the core.
	want, err := transformer.Init(transformerSpec(t).Transformer.Metadata, tensor.Float32, nil)
	require.NoError(t, err)
	for step := range 3 {
		v, results, err := c.Step(ctx, uint64(step), decodeStep(step))
		require.NoError(t, err)
		assert.Equal(t, uint64(step+1), v)
		require.Len(t, results, tL)
		for l := range tL {
			view, err := want.View(l)
			require.NoError(t, err)
			x := token(step, l)
			k, _, mask, next, err := view.ConcatenateToCache(x, x, x, transformer.Mask{}, transformer.ConcatOptions{})
			require.NoError(t, err)
			want, err = want.WithView(l, next)
			require.NoError(t, err)
			assert.True(t, k.Equal(results[l].Key), "step %d layer %d: the key attention gets", step, l)
			assert.True(t, mask.Equal(results[l].Mask))
		}
	}
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(3), cur.Number)
	for l := range tL {
		got := cur.Views[l].(transformer.View)
		w, _ := want.View(l)
		assert.Equal(t, w.Index(), got.Index())
		assert.True(t, w.Key().Equal(got.Key()))
	}
	old, err := c.Snapshot(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 1}, old.Views[0].(transformer.View).Index(), "version 1 is still readable and unchanged")
}

func TestStaleBaseIsRejectedNotMerged(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()
	_, _, err := c.Step(ctx, 0, decodeStep(0))
	require.NoError(t, err)
	_, _, err = c.Step(ctx, 0, decodeStep(1))
	require.ErrorIs(t, err, ErrStale)
	assert.Contains(t, err.Error(), "based on version 0, the current version is 1")

	// Concurrent steps on one base: exactly one wins.
	racing := make([][]LayerWrite, 8)
	for i := range racing {
		racing[i] = decodeStep(2 + i)
	}
	requireOneWins(t, c, 1, racing)
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), cur.Number)
	for l := range tL {
		assert.Equal(t, []int32{2, 2}, cur.Views[l].(transformer.View).Index(), "no write was merged twice")
	}
}

func TestFailedLayerFailsTheWholeStep(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()
	ws := decodeStep(0)
	bad := tensor.Must(tensor.New(tensor.Float32, tB, 1, tH+1, tD))
	ws[2].Write = &TransformerWrite{Key: bad, Value: bad}
	_, _, err := c.Step(ctx, 0, ws)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "layer 2")
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), cur.Number, "version 0 stays current")
	for l := range tL {
		assert.Equal(t, []int32{0, 0}, cur.Views[l].(transformer.View).Index(), "layer %d unchanged", l)
	}
	_, _, err = c.Step(ctx, 0, []LayerWrite{{Layer: 5, Write: ws[0].Write}})
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "layer 5 out of range")
	_, _, err = c.Step(ctx, 0, []LayerWrite{ws[0], ws[0]})
	require.ErrorIs(t, err, ErrInvalid)
	_, _, err = c.Step(ctx, 0, []LayerWrite{{Layer: 0, Write: &PagedWrite{}}})
	require.ErrorIs(t, err, ErrKind)
}

// Readers see version N or N+1, never a mix of layers from two steps.
func TestReadersNeverSeeMixedVersions(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()
	done := make(chan struct{})
	var reads int
	go func() {
		defer close(done)
		for {
			v, err := c.Current(ctx)
			if err != nil {
				return
			}
			reads++
			idx := v.Views[0].(transformer.View).Index()
			for l := 1; l < tL; l++ {
				if got := v.Views[l].(transformer.View).Index(); got[0] != idx[0] {
					t.Errorf("version %d: layer %d has index %v, layer 0 has %v", v.Number, l, got, idx)
					return
				}
			}
			if int(idx[0]) == tS {
				return
			}
		}
	}()
	for step := range tS {
		_, _, err := c.Step(ctx, uint64(step), decodeStep(step))
		require.NoError(t, err)
	}
	<-done
	assert.Positive(t, reads)
}

// panicWrite makes a layer actor panic, as a bug would.
type panicWrite struct{}

func (panicWrite) apply(any) (any, Result, error) { panic("boom") }

// split panics too: in a sharded layer, the layer actor itself panics.
func (panicWrite) split(*Sharded) ([]Write, error) { panic("boom in split") }

// blockWrite holds a layer actor until release is closed, after closing
// started.
type blockWrite struct{ started, release chan struct{} }

func (w blockWrite) apply(view any) (any, Result, error) {
	close(w.started)
	<-w.release
	return view, Result{}, nil
}

func (blockWrite) split(*Sharded) ([]Write, error) {
	return nil, errorf(ErrInvalid, "blockWrite is not split")
}

func TestPanicRestartsTheLayerAndKeepsCommittedData(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()
	_, _, err := c.Step(ctx, 0, decodeStep(0))
	require.NoError(t, err)
	ws := decodeStep(1)
	ws[1].Write = panicWrite{}
	_, _, err = c.Step(ctx, 1, ws)
	require.ErrorIs(t, err, ErrInternal)
	assert.Contains(t, err.Error(), "layer 1 panicked: boom; version 1 is still current")
	// The restarted layer works, and nothing committed was lost.
	v, results, err := c.Step(ctx, 1, decodeStep(1))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), v)
	first := results[1].Key.Float64s()[:tH*tD]
	assert.Equal(t, token(0, 1).Float64s()[:tH*tD], first, "row 0's first token survived the panic")
}

func TestTimeoutAndBackPressure(t *testing.T) {
	c := newTransformerCache(t, WithTimeout(100*time.Millisecond), WithMaxInFlight(1))
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.Step(ctx, 0, []LayerWrite{{Layer: 0, Write: blockWrite{started, release}}})
		errc <- err
	}()
	<-started
	_, _, err := c.Step(ctx, 0, decodeStep(0))
	require.ErrorIs(t, err, ErrBusy, "a second step is refused while one is in flight")
	assert.Contains(t, err.Error(), "1 steps in flight (limit 1)")
	err = <-errc
	require.ErrorIs(t, err, ErrTimeout)
	assert.Contains(t, err.Error(), "cache c")
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), cur.Number)
}

func TestTransactions(t *testing.T) {
	c := newTransformerCache(t)
	ctx := context.Background()
	tx, err := c.Begin(ctx, 0)
	require.NoError(t, err)
	for l := range 2 {
		x := token(0, l)
		res, err := tx.WriteLayer(ctx, l, &TransformerWrite{Key: x, Value: x})
		require.NoError(t, err)
		assert.Equal(t, x.Float64s(), pick(res.Key, 0), "layer %d: the staged key is what attention reads", l)
	}
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(0), cur.Number, "nothing is visible before Commit")
	v, err := tx.Commit(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v)
	cur, err = c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 1}, cur.Views[0].(transformer.View).Index())
	assert.Equal(t, []int32{0, 0}, cur.Views[2].(transformer.View).Index(), "an unwritten layer keeps its view")

	tx2, err := c.Begin(ctx, 1)
	require.NoError(t, err)
	_, err = tx2.WriteLayer(ctx, 0, decodeStep(1)[0].Write)
	require.NoError(t, err)
	require.NoError(t, tx2.Abort(ctx))
	cur, err = c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), cur.Number)
	_, err = tx2.Commit(ctx)
	require.ErrorIs(t, err, ErrNotFound)

	// A transaction whose base went stale cannot commit.
	tx3, err := c.Begin(ctx, 1)
	require.NoError(t, err)
	_, _, err = c.Step(ctx, 1, decodeStep(1))
	require.NoError(t, err)
	_, err = tx3.Commit(ctx)
	require.ErrorIs(t, err, ErrStale)
}

// pick returns position 0 of every row of a (B, S, H, D) tensor.
func pick(t tensor.Tensor, pos int) []float64 {
	all := t.Float64s()
	row := t.Dim(2) * t.Dim(3)
	var out []float64
	for b := range t.Dim(0) {
		off := (b*t.Dim(1) + pos) * row
		out = append(out, all[off:off+row]...)
	}
	return out
}

func TestInsertSharesAPrefill(t *testing.T) {
	rt := newRuntime(t)
	spec := transformerSpec(t)
	c, err := rt.NewCache("c", spec)
	require.NoError(t, err)
	ctx := context.Background()
	meta := spec.Transformer.Metadata
	meta.BatchSize = 1
	pre, err := transformer.Init(meta, tensor.Float32, nil)
	require.NoError(t, err)
	for l := range tL {
		v, _ := pre.View(l)
		x := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{1, 2, 3, 4, 5, 6, 7, 8}, 1, 1, tH, tD))
		v, err = v.Append(x, x)
		require.NoError(t, err)
		pre, err = pre.WithView(l, v)
		require.NoError(t, err)
	}
	v, err := c.Insert(ctx, 0, 1, pre)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v)
	cur, err := c.Current(ctx)
	require.NoError(t, err)
	assert.Equal(t, []int32{0, 1}, cur.Views[2].(transformer.View).Index())
	_, err = c.Insert(ctx, 1, 2, pre)
	require.Error(t, err, "slot 2 of a batch of 2")
}

func TestPagedCacheAndPageManager(t *testing.T) {
	rt := newRuntime(t)
	meta := paged.Metadata{BatchSize: 2, NumHiddenLayers: 2, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 4, HBMUtilization: 0.5}
	c, err := rt.NewCache("p", Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.Float32}})
	require.NoError(t, err)
	ctx := context.Background()
	pages, free, err := c.AllocPrefillPages(ctx, 6)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 2}, pages)
	assert.Equal(t, 6, free)
	_, _, err = c.AllocPages(ctx, 7)
	require.ErrorIs(t, err, pagemanager.ErrNoFreePages)
	assert.Contains(t, err.Error(), "cache p")

	k := tensor.Must(tensor.FromFloat64s(tensor.Float32, make([]float64, 6*2*4), 6, 2, 4))
	ws := []LayerWrite{}
	for l := range 2 {
		ws = append(ws, LayerWrite{Layer: l, Write: &PagedWrite{PrefillKey: k, PrefillValue: k,
			Step: paged.StepMetadata{PrefillLength: 6, PrefillPageTable: pages}}})
	}
	v, _, err := c.Step(ctx, 0, ws)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v)

	// Concurrent allocations are serialised: no page is handed out twice.
	var mu sync.Mutex
	seen := map[int32]bool{}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, _, err := c.AllocPages(ctx, 1)
			if assert.NoError(t, err) {
				mu.Lock()
				assert.False(t, seen[p[0]], "page %d handed out twice", p[0])
				seen[p[0]] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	free, err = c.FreePages(ctx, pages)
	require.NoError(t, err)
	assert.Equal(t, 2, free)
	_, err = c.FreePages(ctx, pages)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, messages.Code_CODE_INVALID_ARGUMENT, se.Code, "a double free is bad input")
	assert.Contains(t, err.Error(), "double free")
}

func TestHostActorSystemAndClose(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(quietLogger))
	rt, err := NewRuntime(WithActorSystem(sys))
	require.NoError(t, err)
	assert.Same(t, sys, rt.System())
	c, err := rt.NewCache("c", transformerSpec(t))
	require.NoError(t, err)
	_, err = rt.NewCache("c", transformerSpec(t))
	require.ErrorIs(t, err, ErrInvalid)
	require.NoError(t, c.Close())
	_, _, err = c.Step(context.Background(), 0, decodeStep(0))
	require.ErrorIs(t, err, ErrClosed)
	require.NoError(t, rt.Close())
	_, err = rt.NewCache("d", transformerSpec(t))
	require.ErrorIs(t, err, ErrClosed)
	_, err = NewRuntime(WithTimeout(0))
	require.ErrorIs(t, err, ErrInvalid)
	_, err = rt.NewCache("x", Spec{})
	require.Error(t, err)
}

func TestPagesOnlyForPagedCaches(t *testing.T) {
	c := newTransformerCache(t)
	_, _, err := c.AllocPages(context.Background(), 1)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "only a paged cache with an HBMPageManager")
}

// A transaction's WriteLayer returns the layer's staged view, which a model
// reads next (paged attention reads its pages).
func TestWriteLayerReturnsTheStagedView(t *testing.T) {
	rt := newRuntime(t)
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 5, NumPagesPerSequence: 2, MaxSequences: 8,
		PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 2, HBMUtilization: 0.5}
	c, err := rt.NewCache("p", Spec{Paged: &PagedSpec{Metadata: meta, DType: tensor.Float64}})
	require.NoError(t, err)
	ctx := context.Background()
	tx, err := c.Begin(ctx, 0)
	require.NoError(t, err)
	k := tensor.Must(tensor.FromFloat64s(tensor.Float64, []float64{1, 2, 3, 4}, 2, 1, 2))
	res, err := tx.WriteLayer(ctx, 0, &PagedWrite{PrefillKey: k, PrefillValue: k, Step: paged.StepMetadata{PrefillLength: 2, PrefillPageTable: []int32{3}}})
	require.NoError(t, err)
	v, ok := res.View.(paged.View)
	require.True(t, ok, "%T", res.View)
	got, _, err := v.Gather([]int32{3}, 2)
	require.NoError(t, err)
	assert.Equal(t, []float64{1, 2, 3, 4}, got.Float64s())
	require.NoError(t, tx.Abort(ctx))
}
