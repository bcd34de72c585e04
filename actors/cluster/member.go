package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/cluster"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/automanaged"
	"github.com/asynkron/protoactor-go/cluster/clusterproviders/etcd"
	"github.com/asynkron/protoactor-go/cluster/identitylookup/disthash"
	"github.com/asynkron/protoactor-go/remote"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/metric"

	"github.com/kvmesh/kvmesh/actors/internal/meters"
	"github.com/kvmesh/kvmesh/actors/transfer"
)

// Sentinel errors of the package.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("cluster: bad config")
	// ErrStart reports a member that could not start (a provider error).
	ErrStart = errors.New("cluster: start failed")
)

// ShardKind is the grain kind of cache shards; PageKind that of page
// managers.
const (
	ShardKind = "kvmesh-shard"
	PageKind  = "kvmesh-pages"
	// clusterName is the protoactor cluster name every member joins.
	clusterName = "kvmesh"
	// HealthPortOffset is added to a member's listen port to get the port
	// of the automanaged provider's health endpoint (protoactor serves it
	// on 0.0.0.0 and needs one port per member on a host).
	HealthPortOffset = 1000
)

// maxHistory bounds Config.History.
const maxHistory = 1 << 16

// Config configures a cluster member or client.
type Config struct {
	// Listen is host:port of the member's gRPC listener.
	Listen string
	// Advertise is host:port other members reach it at ("" = Listen).
	Advertise string
	// Provider is "automanaged" (the default: a static member list, no
	// external service) or "etcd".
	Provider string
	// Members lists every member's listen host:port (automanaged); each
	// one's health endpoint is at its port + HealthPortOffset.
	Members []string
	// Etcd lists etcd endpoints (etcd provider).
	Etcd []string
	// TLS, when set, turns on mutual TLS for all remote traffic.
	TLS *transfer.TLSFiles
	// RequestTimeout bounds one grain call (default 5 s).
	RequestTimeout time.Duration
	// History is how many published versions the grains of a Runtime's
	// caches keep readable by Snapshot, the current one included (0:
	// DefaultHistory). Members ignore it.
	History int
	// Logger receives protoactor's logs (nil: errors only, to stderr).
	Logger *slog.Logger
	// Meter, when set, turns metrics on (OpenTelemetry). A Runtime records
	// the embedded runtime's instruments on it (see
	// actors.WithMeterProvider), with the codes of Code; a member records
	// kvmesh.grain.request.duration (seconds, by grain kind "shard" or
	// "pages" and message) and kvmesh.grains.active (by kind).
	Meter metric.MeterProvider
}

// Validate reports a bad field, naming it and its value.
func (c Config) Validate() error {
	if c.History < 0 || c.History > maxHistory {
		return fmt.Errorf("%w: history %d, want 0..%d (0: the default, %d)", ErrConfig, c.History, maxHistory, DefaultHistory)
	}
	if _, _, err := hostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: listen %q: %v", ErrConfig, c.Listen, err)
	}
	switch c.Provider {
	case "", "automanaged":
		if len(c.Members) == 0 {
			return fmt.Errorf("%w: the automanaged provider needs --members", ErrConfig)
		}
		for _, m := range c.Members {
			if _, _, err := hostPort(m); err != nil {
				return fmt.Errorf("%w: member %q: %v", ErrConfig, m, err)
			}
		}
	case "etcd":
		if len(c.Etcd) == 0 {
			return fmt.Errorf("%w: the etcd provider needs --etcd endpoints", ErrConfig)
		}
	default:
		return fmt.Errorf("%w: provider %q (want automanaged or etcd)", ErrConfig, c.Provider)
	}
	return nil
}

func hostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port+HealthPortOffset > 65535 {
		return "", 0, fmt.Errorf("port %q is not in 1..%d", p, 65535-HealthPortOffset)
	}
	return host, port, nil
}

// Member is a running protoactor cluster member (or client).
type Member struct {
	c      *cluster.Cluster
	once   sync.Once
	meters *meters.Set // nil without Config.Meter
}

// StartMember starts a member that hosts shard and page-manager grains.
func StartMember(cfg Config) (*Member, error) { return start(cfg, true) }

func start(cfg Config, host bool) (m *Member, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	h, port, _ := hostPort(cfg.Listen)
	var provider cluster.ClusterProvider
	if cfg.Provider == "etcd" {
		p, err := etcd.NewWithConfig("/kvmesh", clientv3.Config{Endpoints: cfg.Etcd, DialTimeout: 5 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("%w: etcd %v: %v", ErrStart, cfg.Etcd, err)
		}
		provider = p
	} else {
		var health []string
		for _, mem := range cfg.Members {
			mh, mp, _ := hostPort(mem)
			health = append(health, net.JoinHostPort(mh, strconv.Itoa(mp+HealthPortOffset)))
		}
		provider = automanaged.NewWithConfig(time.Second, port+HealthPortOffset, health...)
	}
	opts, err := transfer.RemoteOptions(64<<20, 16, cfg.TLS)
	if err != nil {
		return nil, err
	}
	if cfg.Advertise != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.Advertise))
	}
	opts = append(opts, func(rc *remote.Config) { rc.MaxRetryCount = 2 })
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	var set *meters.Set
	if cfg.Meter != nil {
		if set, err = meters.New(cfg.Meter); err != nil {
			return nil, fmt.Errorf("%w: meters: %v", ErrConfig, err)
		}
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	var kinds []*cluster.Kind
	if host {
		kinds = append(kinds,
			cluster.NewKind(ShardKind, actor.PropsFromProducer(func() actor.Actor { return metered(set, "shard", newShardGrain()) })),
			cluster.NewKind(PageKind, actor.PropsFromProducer(func() actor.Actor { return metered(set, "pages", newPageGrain()) })))
	}
	ccfg := cluster.Configure(clusterName, provider, disthash.New(), remote.Configure(h, port, opts...),
		cluster.WithKinds(kinds...), cluster.WithRequestTimeout(cfg.RequestTimeout))
	c := cluster.New(sys, ccfg)
	defer func() {
		if r := recover(); r != nil { // StartMember panics on provider errors (pitfall 3)
			err = fmt.Errorf("%w: %v", ErrStart, r)
		}
		if err != nil {
			_ = set.Close()
		}
	}()
	if cfg.Provider != "etcd" {
		// protoactor's automanaged provider starts an echo server that
		// prints "http server started on ..." on standard output, where a
		// command's own output goes (kvmesh run --json): the line goes to
		// standard error instead (echo takes os.Stdout when it is made,
		// during StartMember).
		stdout := os.Stdout
		os.Stdout = os.Stderr
		defer func() { os.Stdout = stdout }()
	}
	c.StartMember()
	return &Member{c: c, meters: set}, nil
}

// Address returns the member's remote address.
func (m *Member) Address() string { return m.c.ActorSystem.Address() }

// Shutdown leaves the cluster; calling it again does nothing (protoactor
// panics on a second Shutdown, pitfall 3).
func (m *Member) Shutdown() {
	m.once.Do(func() {
		defer func() { _ = m.meters.Close() }()
		defer func() { _ = recover() }()
		m.c.Shutdown(true)
	})
}
