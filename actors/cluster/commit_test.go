//go:build !race

// This test runs a member and a client in one process; protoactor's
// cluster races inside the library then (see tests/cluster).

package cluster

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// freeLoopback returns a loopback host:port whose port + HealthPortOffset
// is free too.
func freeLoopback(t *testing.T) string {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port+HealthPortOffset > 65535 {
			continue
		}
		h, err := net.Listen("tcp", "0.0.0.0:"+strconv.Itoa(port+HealthPortOffset))
		if err != nil {
			continue
		}
		_ = h.Close()
		return "127.0.0.1:" + strconv.Itoa(port)
	}
	t.Fatal("no free port pair")
	return ""
}

// When one layer's grain refuses the commit after another's has committed,
// Commit fails and undoes the committed layer: every layer holds the base
// version again, with its bytes, and the next step on the base works.
func TestCommitFailureRollsBack(t *testing.T) {
	member, client := freeLoopback(t), freeLoopback(t)
	quiet := slog.New(slog.DiscardHandler)
	m, err := StartMember(Config{Listen: member, Members: []string{member}, Logger: quiet})
	require.NoError(t, err)
	defer m.Shutdown()
	rt, err := NewRuntime(Config{Listen: client, Members: []string{member}, Logger: quiet, RequestTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer func() { _ = rt.Close() }()
	time.Sleep(2 * time.Second) // the automanaged provider polls its members every second

	spec := actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mamba.Metadata{NumHiddenLayers: 2, BatchSize: 1,
		IntermediateSize: 2, SSMStateSize: 2, ConvKernelSize: 2}}}
	c, err := rt.NewCache("rollback", spec)
	require.NoError(t, err)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 3))
	write := func() actors.Write {
		x := make([]float64, 4)
		for i := range x {
			x[i] = r.NormFloat64()
		}
		return &actors.MambaWrite{ConvSSM: actors.ConvSSM{SSMState: tensor.Must(tensor.FromFloat64s(tensor.Float32, x, 1, 2, 2))}}
	}
	_, _, err = c.Step(ctx, 0, []actors.LayerWrite{{Layer: 0, Write: write()}, {Layer: 1, Write: write()}})
	require.NoError(t, err)
	before, err := c.Current(ctx)
	require.NoError(t, err)

	tx, err := c.Begin(ctx, 1)
	require.NoError(t, err)
	for l := range 2 {
		_, err := tx.WriteLayer(ctx, l, write())
		require.NoError(t, err)
	}
	// layer 1's grain drops its staged write behind the transaction's back
	_, err = rt.call(ctx, c.id, Identity(c.id, 1, 0), &messages.GrainCommit{CacheId: c.id, Epoch: c.epochs[1][0], Version: 2, Abort: true})
	require.NoError(t, err)
	_, err = tx.Commit(ctx)
	require.ErrorIs(t, err, actors.ErrStale, "layer 1 has nothing staged for version 2")
	assert.NotContains(t, err.Error(), "re-create the cache")

	for l := range 2 { // every grain holds version 1 again, read from the grain itself
		rep, err := rt.call(ctx, c.id, Identity(c.id, l, 0), &messages.GrainRead{CacheId: c.id, Epoch: c.epochs[l][0], Version: 1})
		require.NoError(t, err, "layer %d", l)
		v, err := mamba.UnmarshalView(rep.View)
		require.NoError(t, err)
		want := before.Views[l].(mamba.View)
		assert.Equal(t, want.SSMStates().Float64s(), v.SSMStates().Float64s(), "layer %d", l)
		_, err = rt.call(ctx, c.id, Identity(c.id, l, 0), &messages.GrainRead{CacheId: c.id, Epoch: c.epochs[l][0], Version: 2})
		require.ErrorIs(t, err, actors.ErrNotFound, "layer %d holds no version 2", l)
	}
	v, _, err := c.Step(ctx, 1, []actors.LayerWrite{{Layer: 0, Write: write()}, {Layer: 1, Write: write()}})
	require.NoError(t, err, "the cache is usable")
	assert.Equal(t, uint64(2), v)
}
