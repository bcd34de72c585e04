//go:build !race

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/actors/telemetry"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// requestCounts reads the client's kvmesh.cache.request.duration counts
// of cache as "op/code" → calls.
func requestCounts(t *testing.T, r *sdkmetric.ManualReader, cache string) map[string]uint64 {
	t.Helper()
	prefix := "kvmesh.cache.request.duration{cache=" + cache + ",code="
	out := map[string]uint64{}
	for key, n := range points(t, r) {
		if rest, ok := strings.CutPrefix(key, prefix); ok {
			code, op, _ := strings.Cut(strings.TrimSuffix(rest, "}"), ",op=")
			out[op+"/"+code] = uint64(n)
		}
	}
	return out
}

// points reads the client's data points (telemetry.Points).
func points(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out, err := telemetry.Points(rm)
	require.NoError(t, err)
	return out
}

// A clustered client records the same request metrics as the embedded
// runtime (a step is also its begin, layer writes and commit), with the
// cluster's codes; a node started with --metrics-listen serves its
// grains' metrics: requests by kind and message, and active grains.
func TestClusterMetrics(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := l.Addr().String()
	require.NoError(t, l.Close())
	// One member, so every grain is on the node whose metrics are read.
	a := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startNode(t, a, "--members="+a, "--metrics-listen", metricsAddr)

	reader := sdkmetric.NewManualReader()
	rt := newClientWith(t, cluster.Config{Members: []string{a}, Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
	ctx := context.Background()
	c, err := rt.NewCache("metered", mambaSpec(2))
	require.NoError(t, err)
	r := rand.New(rand.NewPCG(7, 7))
	for pos := range 2 {
		_, _, err := c.Step(ctx, uint64(pos), stepWrites(r, 2, pos))
		require.NoError(t, err)
	}
	_, _, err = c.Step(ctx, 0, stepWrites(r, 2, 0))
	require.ErrorIs(t, err, actors.ErrStale)
	_, err = c.Snapshot(ctx, 9)
	require.ErrorIs(t, err, actors.ErrNotFound, "version 9 was never published")

	got := requestCounts(t, reader, "metered")
	assert.Equal(t, map[string]uint64{
		"step/ok": 2, "begin/ok": 2, "write_layer/ok": 4, "commit/ok": 2,
		"step/stale_version": 1, "begin/stale_version": 1,
		"snapshot/not_found": 1,
	}, got)

	// The node answered every grain call: two layers, each initialised,
	// written and committed twice, read once (the refused snapshot of a
	// version never published); the stale step never reached it.
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	text := string(body)
	for message, n := range map[string]int{"init": 2, "write": 4, "commit": 4, "read": 2} {
		assert.Regexp(t, fmt.Sprintf(`kvmesh_grain_request_duration_seconds_count\{kind="shard",message="%s",[^}]*\} %d\n`, message, n), text)
	}
	assert.NotContains(t, text, `message="abort"`)
	assert.Regexp(t, `kvmesh_grains_active\{kind="shard",[^}]*\} 2\n`, text)

	// A paged cache's pool runs in the client: its counters are the
	// client's, per cache, and follow what the pool's steps report.
	ps := *kindCases(t)[1].spec.Paged
	ps.Pool = &pagemanager.PoolConfig{PrefixCaching: true}
	pc, err := rt.NewCache("pooled", actors.Spec{Paged: &ps})
	require.NoError(t, err)
	prompt := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	_, _, err = pc.AddSequence(ctx, 1, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	require.NoError(t, pc.FreeSequence(ctx, 1))
	step, _, err := pc.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	require.Positive(t, step.HitTokens)
	pool := points(t, reader)
	assert.Equal(t, float64(2*len(prompt)), pool["kvmesh.pool.prompt.tokens{cache=pooled}"])
	assert.Equal(t, float64(step.HitTokens), pool["kvmesh.pool.hit.tokens{cache=pooled}"])
	assert.Equal(t, float64(ps.Metadata.NumPagesPerLayer-1-3), pool["kvmesh.pool.free.pages{cache=pooled}"], "3 pages held of the usable ones")
}
