package main

import (
	"context"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/metric"

	"github.com/kvmesh/kvmesh/actors/telemetry"
)

// startMetrics serves the process's metrics for Prometheus on
// addr/metrics: it returns the meter provider to give the runtime, and a
// function that stops serving. A bad or busy address is bad input.
func startMetrics(addr string, log io.Writer) (metric.MeterProvider, func(), error) {
	p, err := telemetry.NewPrometheus()
	if err != nil {
		return nil, nil, exitError{exitFailed, err}
	}
	srv, err := telemetry.Serve(addr, p.Handler())
	if err != nil {
		_ = p.Shutdown(context.Background())
		return nil, nil, badInput("--metrics-listen: %v", err)
	}
	fmt.Fprintf(log, "kvmesh: metrics on http://%s/metrics\n", srv.Addr())
	return p.MeterProvider(), func() {
		_ = srv.Close()
		_ = p.Shutdown(context.Background())
	}, nil
}
