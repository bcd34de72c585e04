package engine

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors"
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

	kv := attribute.NewSet(attribute.String("cache", "kv"))
	addOK := attribute.NewSet(attribute.String("cache", "kv"), attribute.String("code", "ok"), attribute.String("op", "add_sequence"))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&kv) {
						got[m.Name] = p.Value
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&kv) {
						got[m.Name] = p.Value
					}
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					if p.Attributes.Equals(&addOK) {
						got["add_sequence ok"] = int64(p.Count)
					}
				}
			}
		}
	}
	assert.Equal(t, int64(rep.HitTokens), got["kvmesh.pool.hit.tokens"])
	assert.Equal(t, int64(rep.Evictions), got["kvmesh.pool.evictions"])
	assert.Equal(t, int64(rep.PagesFreeAtEnd), got["kvmesh.pool.free.pages"])
	assert.Equal(t, int64(rep.Admissions), got["add_sequence ok"])
}
