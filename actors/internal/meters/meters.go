package meters

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Scope is the instrumentation scope name of kvmesh's runtime meters.
const Scope = "github.com/kvmesh/kvmesh/actors"

// latencyBuckets are the histogram bounds in seconds: 25 µs to 10 s.
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 5, 10}

// Set is one runtime's instruments. A nil *Set records nothing at no cost,
// which is what a runtime without a meter provider uses. A Set is safe for
// concurrent use.
type Set struct {
	duration metric.Float64Histogram
	grain    metric.Float64Histogram
	active   metric.Int64UpDownCounter
	prompt   metric.Int64Counter
	hits     metric.Int64Counter
	evicted  metric.Int64Counter

	mu   sync.Mutex
	free map[string]int64 // cache → free pages, read by the gauge callback
	reg  metric.Registration
}

// New creates the instruments on mp's meter for Scope.
func New(mp metric.MeterProvider) (*Set, error) {
	m := mp.Meter(Scope)
	s := &Set{free: map[string]int64{}}
	var err error
	if s.duration, err = m.Float64Histogram("kvmesh.cache.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time from a cache API call to its reply, by cache, operation and status code."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, err
	}
	if s.grain, err = m.Float64Histogram("kvmesh.grain.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time a cluster member's grain spends on one request, by grain kind and message."),
		metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, err
	}
	if s.active, err = m.Int64UpDownCounter("kvmesh.grains.active",
		metric.WithUnit("{grain}"),
		metric.WithDescription("Grains activated on a cluster member and not yet stopped, by kind.")); err != nil {
		return nil, err
	}
	if s.prompt, err = m.Int64Counter("kvmesh.pool.prompt.tokens",
		metric.WithUnit("{token}"),
		metric.WithDescription("Prompt tokens of the sequences added to a paged cache's pool.")); err != nil {
		return nil, err
	}
	if s.hits, err = m.Int64Counter("kvmesh.pool.hit.tokens",
		metric.WithUnit("{token}"),
		metric.WithDescription("Prompt tokens served by a paged cache's prefix cache.")); err != nil {
		return nil, err
	}
	if s.evicted, err = m.Int64Counter("kvmesh.pool.evictions",
		metric.WithUnit("{page}"),
		metric.WithDescription("Cached pages whose prefix-cache key was dropped to reuse the page.")); err != nil {
		return nil, err
	}
	free, err := m.Int64ObservableGauge("kvmesh.pool.free.pages",
		metric.WithUnit("{page}"),
		metric.WithDescription("Pages in a paged cache pool's free queue (cached pages that can be evicted included), as of its last operation."))
	if err != nil {
		return nil, err
	}
	s.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for cache, n := range s.free {
			o.ObserveInt64(free, n, metric.WithAttributes(attribute.String("cache", cache)))
		}
		return nil
	}, free)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Request records one API call of cache: its operation, its duration since
// start and its status code ("ok" when it succeeded; see the runtimes'
// Code functions).
func (s *Set) Request(cache, op string, start time.Time, code string) {
	if s == nil {
		return
	}
	s.duration.Record(context.Background(), time.Since(start).Seconds(), metric.WithAttributes(
		attribute.String("cache", cache), attribute.String("op", op), attribute.String("code", code)))
}

// Grain records one request a member's grain of kind ("shard" or
// "pages") handled: its message name and the time since start.
func (s *Set) Grain(kind, message string, start time.Time) {
	if s == nil {
		return
	}
	s.grain.Record(context.Background(), time.Since(start).Seconds(), metric.WithAttributes(
		attribute.String("kind", kind), attribute.String("message", message)))
}

// GrainActive counts a grain of kind activated (delta 1) or stopped (-1).
func (s *Set) GrainActive(kind string, delta int64) {
	if s == nil {
		return
	}
	s.active.Add(context.Background(), delta, metric.WithAttributes(attribute.String("kind", kind)))
}

// Pool records a pool operation of cache: the prompt and hit tokens of an
// added sequence (0 for other operations), the pages it evicted and the
// free pages left.
func (s *Set) Pool(cache string, prompt, hits, evicted, free int) {
	if s == nil {
		return
	}
	attrs := metric.WithAttributes(attribute.String("cache", cache))
	ctx := context.Background()
	if prompt > 0 {
		s.prompt.Add(ctx, int64(prompt), attrs)
		s.hits.Add(ctx, int64(hits), attrs)
	}
	if evicted > 0 {
		s.evicted.Add(ctx, int64(evicted), attrs)
	}
	s.mu.Lock()
	s.free[cache] = int64(free)
	s.mu.Unlock()
}

// Forget drops cache's gauge, when it is closed.
func (s *Set) Forget(cache string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	delete(s.free, cache)
	s.mu.Unlock()
}

// Close unregisters the gauge callback.
func (s *Set) Close() error {
	if s == nil || s.reg == nil {
		return nil
	}
	return s.reg.Unregister()
}
