package main

import (
	"context"
	"errors"
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/actors/transfer"
)

func newNodeCmd() *cobra.Command {
	var cfg cluster.Config
	var members, etcd string
	var cert, key, ca, metricsAddr string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a cluster member that hosts cache-shard and page-manager grains",
		Long: `node starts a kvmesh cluster member (protoactor cluster) hosting cache-shard grains
(identity cache/<id>/layer/<l>/shard/<s>) and page-manager grains, and runs until
SIGINT or SIGTERM.

Membership: --provider automanaged (the default; no external service) takes every
member's listen address from --members, and serves its health endpoint on
0.0.0.0:<listen port + 1000> (so that port must be free too); --provider etcd
registers in the etcd cluster at --etcd. --tls-cert, --tls-key and --tls-ca turn on
mutual TLS: peers without a certificate signed by the CA are refused.

--metrics-listen host:port serves the member's metrics for Prometheus on
http://host:port/metrics: kvmesh_grain_request_duration_seconds (by grain kind,
shard or pages, and message: init, write, part, fetch, commit, abort, read, close,
alloc_pages, ...) and kvmesh_grains_active (by kind).

  kvmesh node --listen 127.0.0.1:47101 --members 127.0.0.1:47101,127.0.0.1:47102,127.0.0.1:47103

It prints "kvmesh node: listening on <address>" once it has joined. Exit codes: 0
after a signal, 2 on bad flags, 1 if the member cannot start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Members = splitList(members)
			cfg.Etcd = splitList(etcd)
			switch n := countSet(cert, key, ca); n {
			case 0:
			case 3:
				cfg.TLS = &transfer.TLSFiles{CertFile: cert, KeyFile: key, CAFile: ca}
			default:
				return badInput("--tls-cert, --tls-key and --tls-ca go together (got %d of 3)", n)
			}
			if err := cfg.Validate(); err != nil {
				return badInput("%v", err)
			}
			if metricsAddr != "" {
				mp, stopMetrics, err := startMetrics(metricsAddr, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				defer stopMetrics()
				cfg.Meter = mp
			}
			m, err := cluster.StartMember(cfg)
			if errors.Is(err, cluster.ErrConfig) {
				return badInput("%v", err)
			}
			if err != nil {
				return exitError{exitFailed, err}
			}
			defer m.Shutdown()
			fmt.Fprintf(cmd.OutOrStdout(), "kvmesh node: listening on %s\n", m.Address())
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:47101", "host:port of the member's gRPC listener")
	f.StringVar(&cfg.Advertise, "advertise", "", "host:port other members reach this one at (default: --listen)")
	f.StringVar(&cfg.Provider, "provider", "automanaged", "membership provider: automanaged or etcd")
	f.StringVar(&members, "members", "", "automanaged: every member's listen host:port, comma-separated")
	f.StringVar(&etcd, "etcd", "", "etcd: endpoints, comma-separated")
	f.StringVar(&cert, "tls-cert", "", "mutual TLS: this member's certificate (PEM)")
	f.StringVar(&key, "tls-key", "", "mutual TLS: this member's key (PEM)")
	f.StringVar(&ca, "tls-ca", "", "mutual TLS: the CA that signs every member's certificate (PEM)")
	f.StringVar(&metricsAddr, "metrics-listen", "", "host:port to serve Prometheus metrics on (/metrics); empty: none")
	cmd.SetContext(context.Background())
	return cmd
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func countSet(s ...string) int {
	n := 0
	for _, x := range s {
		if x != "" {
			n++
		}
	}
	return n
}
