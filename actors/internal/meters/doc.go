// Package meters holds the OpenTelemetry instruments that the embedded and
// the clustered runtimes record: request latency and outcome per cache and
// operation, and a paged cache's pool counters. Both runtimes record the
// same names, so one dashboard serves either deployment.
package meters
