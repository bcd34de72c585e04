package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/transformer"
)

// TestSixteenCachesConcurrently drives 16 caches of mixed kinds (the five
// kinds in turn), all on one runtime, from 16 goroutines at once, 24 steps
// each (paged caches also allocate their pages through the page-manager
// actor as they go). Each goroutine checks every step's results against its
// own core reference; afterwards every cache's current version and every
// kept version must equal its own reference, so no step, result or page of
// one cache leaked into another. Run it under -race.
func TestSixteenCachesConcurrently(t *testing.T) {
	const caches, steps = 16, 24
	rt, err := NewRuntime(WithHistory(steps + 1))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	ctx := context.Background()

	models := make([]coreModel, caches)
	cs := make([]*Cache, caches)
	for i := range caches {
		kind := coreKinds[i%len(coreKinds)]
		models[i], err = newCoreModel(kind, int64(100+i))
		require.NoError(t, err)
		cs[i], err = rt.NewCache(fmt.Sprintf("%s-%d", kind, i), models[i].spec())
		require.NoError(t, err)
	}

	start := make(chan struct{})
	errs := make([]error, caches)
	var wg sync.WaitGroup
	for i := range caches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start // every goroutine steps at the same time
			for s := range uint64(steps) {
				if err := coreStep(ctx, cs[i], models[i], s); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "cache %s", cs[i].ID())
	}

	for i, c := range cs {
		cur, err := c.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, uint64(steps), cur.Number, "cache %s", c.ID())
		for n := range uint64(steps + 1) {
			v, err := c.Snapshot(ctx, n)
			require.NoError(t, err)
			require.NoError(t, models[i].check(v), "cache %s", c.ID())
		}
	}
}

// errStopped ends a reader whose writer failed.
var errStopped = errors.New("stopped: the writer failed")

// sameStepMarker returns an error unless every layer of v carries the
// marker of one and the same step: for a contiguous cache every layer's
// index (every layer gets the same number of tokens per step), for a Mamba2
// cache every layer's seqlen offset, which is v's number (every step
// advances it by one). Other kinds have no such marker; the full
// comparison with the reference covers them.
func sameStepMarker(v Version) error {
	for l, view := range v.Views {
		switch x := view.(type) {
		case transformer.View:
			first := v.Views[0].(transformer.View).Index()
			if got := x.Index(); !slices.Equal(first, got) {
				return fmt.Errorf("version %d: layer %d has index %v, layer 0 has %v", v.Number, l, got, first)
			}
		case mamba2.View:
			if x.SeqlenOffset() != int(v.Number) {
				return fmt.Errorf("version %d: layer %d has seqlen offset %d", v.Number, l, x.SeqlenOffset())
			}
		}
	}
	return nil
}

// readWholeVersions reads c while a writer steps it, until it sees version
// last (or stop closes): with snapshots false it reads Current, and
// requires the numbers never to go back; with snapshots true it reads
// Current and then Snapshot of a random version up to it. Every version
// read must carry one step's marker in every layer and equal the reference
// version of its number, layer by layer: a version mixing layers of two
// steps fails both. It returns the versions it read, for a check after
// the writer is done.
func readWholeVersions(ctx context.Context, c *Cache, m coreModel, last uint64, snapshots bool, seed int64, stop <-chan struct{}) ([]Version, error) {
	r := rand.New(rand.NewSource(seed))
	var seen []Version
	var prev uint64
	for {
		v, err := c.Current(ctx)
		if err != nil {
			return seen, err
		}
		if v.Number < prev {
			return seen, fmt.Errorf("the current version went back from %d to %d", prev, v.Number)
		}
		prev = v.Number
		if snapshots {
			n := uint64(r.Int63n(int64(v.Number) + 1))
			if v, err = c.Snapshot(ctx, n); err != nil {
				return seen, err
			}
			if v.Number != n {
				return seen, fmt.Errorf("snapshot %d returned version %d", n, v.Number)
			}
		}
		if err := sameStepMarker(v); err != nil {
			return seen, err
		}
		if err := m.check(v); err != nil {
			return seen, fmt.Errorf("read while steps run: %w", err)
		}
		seen = append(seen, v)
		if prev == last {
			return seen, nil
		}
		select {
		case <-stop:
			return seen, errStopped
		default:
		}
	}
}

// TestConcurrentReadersSeeOnlyWholeVersions runs, for every cache kind, a
// writer stepping a cache 20 times while three readers read it (two
// through Current, one through Snapshot of random versions): every version
// a reader gets must be whole (see readWholeVersions). After the writer is
// done, every version any reader got must still equal its reference: what
// a version can see never changes, whatever later steps write.
func TestConcurrentReadersSeeOnlyWholeVersions(t *testing.T) {
	const steps, readers = 20, 3
	for i, kind := range coreKinds {
		t.Run(kind, func(t *testing.T) {
			m, c := newModelCache(t, kind, int64(200+i), steps)
			ctx := context.Background()

			start, stop := make(chan struct{}), make(chan struct{})
			seen := make([][]Version, readers)
			errs := make([]error, readers)
			var wg sync.WaitGroup
			for j := range readers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					seen[j], errs[j] = readWholeVersions(ctx, c, m, steps, j == readers-1, int64(j), stop)
				}()
			}
			close(start)
			var werr error
			for s := range uint64(steps) {
				if werr = coreStep(ctx, c, m, s); werr != nil {
					close(stop)
					break
				}
			}
			wg.Wait()
			require.NoError(t, werr)
			reads := 0
			for j := range readers {
				require.NoError(t, errs[j], "reader %d", j)
				require.NotEmpty(t, seen[j], "reader %d", j)
				for _, v := range seen[j] {
					require.NoError(t, m.check(v), "reader %d: version %d, checked again after every step", j, v.Number)
				}
				reads += len(seen[j])
			}
			t.Logf("%d reads", reads)
		})
	}
}
