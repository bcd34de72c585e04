// Package telemetry exports kvmesh's OpenTelemetry metrics for Prometheus:
// a meter provider to give the runtimes (actors.WithMeterProvider,
// cluster.Config.Meter) and an HTTP endpoint that serves what they record
// in Prometheus' text format. It is how `kvmesh node --metrics-listen` and
// `kvmesh run --metrics-listen` expose their metrics; an embedding
// application with its own OpenTelemetry pipeline passes its own provider
// to the runtimes instead.
package telemetry
