package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/telemetry"
)

// A run on a metered runtime leaves metrics that agree with its report:
// the pool's hit tokens, evictions and free pages, and one successful
// add_sequence per admission. They are read when the last step has
// committed (in the Snapshot hook), before the report's free-page probe,
// which adds a sequence of its own and evicts every cached page.
func TestRunMetricsAgreeWithReport(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	rt, err := actors.NewRuntime(actors.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
	require.NoError(t, err)
	defer func() { _ = rt.Close() }()
	cfg := smallConfig()
	cfg.Scheduler.Pages = 28
	var rm metricdata.ResourceMetrics
	cfg.Snapshot = func(id string, _ actors.Version) error {
		if id != "kv" {
			return nil
		}
		return reader.Collect(context.Background(), &rm)
	}
	rep, err := RunWith(context.Background(), cfg, Embedded(rt))
	require.NoError(t, err)
	require.Positive(t, rep.Evictions, "the pool is small enough to evict")
	require.Positive(t, rep.HitTokens)

	got, err := telemetry.Points(rm)
	require.NoError(t, err)
	assert.Equal(t, float64(rep.HitTokens), got["kvmesh.pool.hit.tokens{cache=kv}"])
	assert.Equal(t, float64(rep.Evictions), got["kvmesh.pool.evictions{cache=kv}"])
	assert.Equal(t, float64(rep.PagesFreeAtEnd), got["kvmesh.pool.free.pages{cache=kv}"])
	assert.Equal(t, float64(rep.Admissions), got["kvmesh.cache.request.duration{cache=kv,code=ok,op=add_sequence}"])
}
