package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/metric"

	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/actors/engine"
	"github.com/kvmesh/kvmesh/actors/transfer"
)

// clusterFlags are kvmesh run's flags for serving through a cluster.
type clusterFlags struct {
	members, etcd, provider, listen string
	cert, key, ca                   string
}

func (c *clusterFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.members, "members", "", "run against a kvmesh cluster: every member's listen host:port, comma-separated (automanaged)")
	f.StringVar(&c.provider, "provider", "automanaged", "with a cluster: membership provider, automanaged or etcd")
	f.StringVar(&c.etcd, "etcd", "", "with --provider etcd: etcd endpoints, comma-separated")
	f.StringVar(&c.listen, "cluster-listen", "", "with a cluster: host:port this client listens on (default: a free loopback port)")
	f.StringVar(&c.cert, "tls-cert", "", "with a cluster: mutual TLS certificate (PEM)")
	f.StringVar(&c.key, "tls-key", "", "with a cluster: mutual TLS key (PEM)")
	f.StringVar(&c.ca, "tls-ca", "", "with a cluster: the CA of every member's certificate (PEM)")
}

// join joins the cluster as a client (recording metrics on meter, when
// not nil) and returns the engine's backend on it and a function that
// leaves the cluster.
func (c *clusterFlags) join(meter metric.MeterProvider) (engine.Backend, func(), error) {
	cfg := cluster.Config{Listen: c.listen, Provider: c.provider, Members: splitList(c.members), Etcd: splitList(c.etcd),
		Logger: slog.New(slog.DiscardHandler), Meter: meter}
	switch n := countSet(c.cert, c.key, c.ca); n {
	case 0:
	case 3:
		cfg.TLS = &transfer.TLSFiles{CertFile: c.cert, KeyFile: c.key, CAFile: c.ca}
	default:
		return nil, nil, badInput("--tls-cert, --tls-key and --tls-ca go together (got %d of 3)", n)
	}
	if cfg.Listen == "" {
		port, err := freeClientPort()
		if err != nil {
			return nil, nil, exitError{exitFailed, err}
		}
		cfg.Listen = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if err := cfg.Validate(); err != nil {
		return nil, nil, badInput("%v", err)
	}
	rt, err := cluster.NewRuntime(cfg)
	if errors.Is(err, cluster.ErrConfig) {
		return nil, nil, badInput("%v", err)
	}
	if err != nil {
		return nil, nil, exitError{exitFailed, err}
	}
	if cfg.Provider != "etcd" {
		time.Sleep(2 * time.Second) // the automanaged provider polls the members' health every second
	}
	return engine.Clustered(rt), func() { _ = rt.Close() }, nil
}

// freeClientPort finds a loopback port free for the client's listener and
// for its health endpoint (port + cluster.HealthPortOffset).
func freeClientPort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port+cluster.HealthPortOffset > 65535 {
			continue
		}
		h, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+cluster.HealthPortOffset))
		if err != nil {
			continue
		}
		_ = h.Close()
		return port, nil
	}
	return 0, errors.New("no free loopback port pair for the cluster client")
}
