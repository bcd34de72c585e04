package telemetry_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors/telemetry"
)

// Points keys each data point by metric and attributes in key order, takes
// a histogram's count, skips other scopes, and refuses data kinds the
// runtimes do not record, naming the metric.
func TestPoints(t *testing.T) {
	attrs := attribute.NewSet(attribute.String("op", "step"), attribute.String("cache", "c"))
	rm := metricdata.ResourceMetrics{ScopeMetrics: []metricdata.ScopeMetrics{
		{Scope: instrumentation.Scope{Name: telemetry.Scope}, Metrics: []metricdata.Metrics{
			{Name: "h", Data: metricdata.Histogram[float64]{DataPoints: []metricdata.HistogramDataPoint[float64]{{Attributes: attrs, Count: 3}}}},
			{Name: "s", Data: metricdata.Sum[int64]{DataPoints: []metricdata.DataPoint[int64]{{Attributes: attrs, Value: 7}}}},
			{Name: "g", Data: metricdata.Gauge[int64]{DataPoints: []metricdata.DataPoint[int64]{{Value: 2}}}},
		}},
		{Scope: instrumentation.Scope{Name: "other"}, Metrics: []metricdata.Metrics{
			{Name: "x", Data: metricdata.Gauge[float64]{}},
		}},
	}}
	got, err := telemetry.Points(rm)
	require.NoError(t, err)
	assert.Equal(t, map[string]float64{"h{cache=c,op=step}": 3, "s{cache=c,op=step}": 7, "g{}": 2}, got)

	rm.ScopeMetrics[0].Metrics = append(rm.ScopeMetrics[0].Metrics, metricdata.Metrics{Name: "f", Data: metricdata.Gauge[float64]{}})
	_, err = telemetry.Points(rm)
	require.ErrorContains(t, err, "metric f has data metricdata.Gauge[float64]")
}
