package actors

import (
	"context"
	"fmt"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Helpers shared by the package's tests.

// randTensor returns a float32 tensor of shape with values drawn from r
// (caches of another dtype convert it, as a model's outputs would be).
func randTensor(r *rand.Rand, shape ...int) tensor.Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	vals := make([]float64, n)
	for i := range vals {
		vals[i] = r.NormFloat64()
	}
	return tensor.Must(tensor.FromFloat64s(tensor.Float32, vals, shape...))
}

// layerWrites returns one write for every layer 0..n-1, each made by
// write, which is called in layer order.
func layerWrites[W Write](n int, write func() W) []LayerWrite {
	ws := make([]LayerWrite, n)
	for l := range ws {
		ws[l] = LayerWrite{Layer: l, Write: write()}
	}
	return ws
}

// viewAs returns view as a V, or an error naming what it is.
func viewAs[V any](view any) (V, error) {
	v, ok := view.(V)
	if !ok {
		var want V
		return v, fmt.Errorf("the view is a %T, want a %T", view, want)
	}
	return v, nil
}

// writeAs returns w as a W, or an error naming what it is.
func writeAs[W any](w Write) (W, error) {
	x, ok := w.(W)
	if !ok {
		var want W
		return x, fmt.Errorf("the write is a %T, want a %T", w, want)
	}
	return x, nil
}

// requireSame turns same, a comparison of two views of one kind, into a
// test assertion on two views of any type: both must be V's and same must
// pass.
func requireSame[V any](same func(want, got V) error) func(t *testing.T, want, got any) {
	return func(t *testing.T, want, got any) {
		t.Helper()
		w, err := viewAs[V](want)
		require.NoError(t, err, "want")
		g, err := viewAs[V](got)
		require.NoError(t, err, "got")
		require.NoError(t, same(w, g))
	}
}

// requireOneWins runs a step of every element of writes on c, all on base
// and all at once, and requires exactly one to win: every other must fail
// with ErrStale (nothing is merged).
func requireOneWins(t *testing.T, c *Cache, base uint64, writes [][]LayerWrite) {
	t.Helper()
	errs := make(chan error, len(writes))
	for _, ws := range writes {
		go func() {
			_, _, err := c.Step(context.Background(), base, ws)
			errs <- err
		}()
	}
	wins := 0
	for range writes {
		if err := <-errs; err == nil {
			wins++
		} else {
			require.ErrorIs(t, err, ErrStale)
		}
	}
	require.Equal(t, 1, wins, "steps on base %d that won", base)
}
