package telemetry_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/telemetry"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// What a runtime records comes out of /metrics in Prometheus' text format,
// under Prometheus names (dots to underscores, unit suffixes).
func TestServeRuntimeMetrics(t *testing.T) {
	p, err := telemetry.NewPrometheus()
	require.NoError(t, err)
	defer func() { _ = p.Shutdown(context.Background()) }()
	rt, err := actors.NewRuntime(actors.WithMeterProvider(p.MeterProvider()))
	require.NoError(t, err)
	defer func() { _ = rt.Close() }()
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 4, HBMUtilization: 0.5}
	c, err := rt.NewCache("chat", actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: tensor.Float32,
		Pool: &pagemanager.PoolConfig{PrefixCaching: true}}})
	require.NoError(t, err)
	ctx := context.Background()
	prompt := []int32{1, 2, 3, 4, 5, 6}
	_, _, err = c.AddSequence(ctx, 1, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	require.NoError(t, c.FreeSequence(ctx, 1))
	_, _, err = c.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)

	srv, err := telemetry.Serve("127.0.0.1:0", p.Handler())
	require.NoError(t, err)
	defer func() { _ = srv.Close() }()
	res, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	require.NoError(t, err)
	defer func() { _ = res.Body.Close() }()
	require.Equal(t, http.StatusOK, res.StatusCode)
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	text := string(body)
	for _, want := range []string{
		`kvmesh_cache_request_duration_seconds_count{cache="chat",code="ok",op="add_sequence",otel_scope_name="github.com/kvmesh/kvmesh/actors"`,
		`kvmesh_pool_prompt_tokens_total{cache="chat",otel_scope_name="github.com/kvmesh/kvmesh/actors"`,
		`kvmesh_pool_hit_tokens_total{cache="chat",otel_scope_name="github.com/kvmesh/kvmesh/actors"`,
		`kvmesh_pool_free_pages{cache="chat",otel_scope_name="github.com/kvmesh/kvmesh/actors"`,
	} {
		assert.Contains(t, text, want)
	}
	assert.Regexp(t, `kvmesh_pool_hit_tokens_total\{[^}]*\} 4\n`, text, "one full page of the repeated prompt hit")
	assert.Regexp(t, `kvmesh_pool_prompt_tokens_total\{[^}]*\} 12\n`, text)
}

// Serve reports a listen failure at once, naming the address.
func TestServeListenError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	_, err = telemetry.Serve(ln.Addr().String(), http.NotFoundHandler())
	require.Error(t, err)
	assert.Contains(t, err.Error(), ln.Addr().String())
	_, err = telemetry.Serve("nohost", http.NotFoundHandler())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"nohost"`)
}
