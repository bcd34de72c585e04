package telemetry

import (
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors/internal/meters"
)

// Scope is the instrumentation scope of the runtimes' metrics.
const Scope = meters.Scope

// Points flattens the runtimes' data points in rm (scope Scope) into
// "<metric>{<attr>=<value>,...}" → value, attributes in key order: a
// counter's or gauge's value, a histogram's count. It is how a program or
// a test reads what a runtime recorded (with an sdkmetric.ManualReader)
// without an exporter. A data kind the runtimes do not record is an error
// naming the metric.
func Points(rm metricdata.ResourceMetrics) (map[string]float64, error) {
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != Scope {
			continue
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[pointKey(m.Name, p.Attributes.ToSlice())] = float64(p.Count)
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[pointKey(m.Name, p.Attributes.ToSlice())] = float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[pointKey(m.Name, p.Attributes.ToSlice())] = float64(p.Value)
				}
			default:
				return nil, fmt.Errorf("telemetry: metric %s has data %T, which the runtimes do not record", m.Name, m.Data)
			}
		}
	}
	return out, nil
}

// pointKey is a data point's Points key.
func pointKey(name string, attrs []attribute.KeyValue) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, kv := range attrs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%s", kv.Key, kv.Value.Emit())
	}
	b.WriteByte('}')
	return b.String()
}
