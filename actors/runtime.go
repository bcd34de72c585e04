package actors

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/metric"

	"github.com/kvmesh/kvmesh/actors/internal/meters"
)

// config holds the runtime's settings.
type config struct {
	system      *actor.ActorSystem
	timeout     time.Duration
	maxInFlight int
	history     int
	meter       metric.MeterProvider
}

// Option configures a Runtime (protoactor's With… idiom).
type Option func(*config)

// WithActorSystem makes the runtime use the host application's actor system
// instead of creating its own; Close then leaves the system running.
func WithActorSystem(sys *actor.ActorSystem) Option { return func(c *config) { c.system = sys } }

// WithTimeout sets how long a request waits for its reply (default 10 s).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithMaxInFlight bounds the steps and transaction writes a cache has in
// flight at once (default 64); more are refused with ErrBusy: the runtime's
// back-pressure.
func WithMaxInFlight(n int) Option { return func(c *config) { c.maxInFlight = n } }

// WithHistory sets how many published versions a cache keeps readable by
// Snapshot, the current one included (default 16).
func WithHistory(n int) Option { return func(c *config) { c.history = n } }

// WithMeterProvider records the runtime's metrics on mp (OpenTelemetry):
// kvmesh.cache.request.duration (seconds, by cache, op and status code) for
// every API call, and for caches with a page pool kvmesh.pool.prompt.tokens,
// kvmesh.pool.hit.tokens, kvmesh.pool.evictions and kvmesh.pool.free.pages.
// Recording costs nothing measurable on a decode step
// (BenchmarkStepActors/transformer-metered). protoactor's own per-message
// instruments are not turned on: they made that step 3 to 5 times
// slower; a host that wants them passes its own actor system (created
// with actor.WithMetricProviders) with WithActorSystem. Without this
// option nothing is recorded.
func WithMeterProvider(mp metric.MeterProvider) Option { return func(c *config) { c.meter = mp } }

// Runtime is kvmesh's embedded actor runtime: it hosts caches as actors in
// one process. It is safe for concurrent use.
type Runtime struct {
	cfg    config
	sys    *actor.ActorSystem
	owned  bool
	meters *meters.Set // nil without WithMeterProvider

	mu     sync.Mutex
	caches map[string]*actor.PID // protected by mu
	closed bool                  // protected by mu
}

// NewRuntime starts a runtime.
func NewRuntime(opts ...Option) (*Runtime, error) {
	cfg := config{timeout: 10 * time.Second, maxInFlight: 64, history: 16}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.timeout <= 0 || cfg.maxInFlight <= 0 || cfg.history <= 0 {
		return nil, fmt.Errorf("%w: timeout %v, max in flight %d and history %d must be positive", ErrInvalid, cfg.timeout, cfg.maxInFlight, cfg.history)
	}
	r := &Runtime{cfg: cfg, sys: cfg.system, caches: map[string]*actor.PID{}}
	if cfg.meter != nil {
		m, err := meters.New(cfg.meter)
		if err != nil {
			return nil, fmt.Errorf("%w: meters: %v", ErrInvalid, err)
		}
		r.meters = m
	}
	if r.sys == nil {
		r.sys, r.owned = actor.NewActorSystem(actor.WithLoggerFactory(quietLogger)), true
	}
	return r, nil
}

// quietLogger keeps protoactor's own logging to warnings and errors, through
// log/slog's default handler.
func quietLogger(*actor.ActorSystem) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// System returns the actor system the runtime runs on.
func (r *Runtime) System() *actor.ActorSystem { return r.sys }

// Close stops every cache of the runtime, and its actor system if the
// runtime created it. Requests afterwards fail with ErrClosed.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	pids := make([]*actor.PID, 0, len(r.caches))
	for _, pid := range r.caches {
		pids = append(pids, pid)
	}
	r.caches = nil
	r.mu.Unlock()
	for _, pid := range pids {
		_ = r.sys.Root.StopFuture(pid).Wait()
	}
	if r.owned {
		r.sys.Shutdown()
	}
	return r.meters.Close()
}

// spawn registers a cache actor under id.
func (r *Runtime) spawn(id string, a *cacheActor) (*actor.PID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errorf(ErrClosed, "runtime is closed; cannot create cache %s", id)
	}
	if _, dup := r.caches[id]; dup {
		return nil, errorf(ErrInvalid, "cache %s already exists", id)
	}
	strategy := restartAndReport{parent: &a.parentPID}
	pid, err := r.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return a }, actor.WithSupervisor(strategy)), "cache/"+id)
	if err != nil {
		return nil, fmt.Errorf("%w: cache %s: %v", ErrInvalid, id, err)
	}
	r.caches[id] = pid
	return pid, nil
}

// forget removes a closed cache.
func (r *Runtime) forget(id string) (*actor.PID, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, ok := r.caches[id]
	delete(r.caches, id)
	return pid, ok
}
