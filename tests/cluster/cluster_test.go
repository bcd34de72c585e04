//go:build !race

// The node processes are separate OS processes, but the test process runs
// a cluster client in-process, and protoactor's cluster races inside the
// library even then (disthash's topology update against lookups:
// notes/protoactor.md pitfall 7). So these tests build without -race only;
// .ci/run runs this package once more without the race detector.

// Package cluster_test starts real `kvmesh node` processes on 127.0.0.1 and
// drives them with the clustered runtime (actors/cluster) from the test
// process. The binary is built once in TestMain; every test bounds its
// time and kills its processes on cleanup.
package cluster_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/pagemanager"
)

var kvmeshBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvmesh-cluster-test")
	if err != nil {
		panic(err)
	}
	kvmeshBin = filepath.Join(dir, "kvmesh")
	out, err := exec.Command("go", "build", "-o", kvmeshBin, "github.com/kvmesh/kvmesh/cmd/kvmesh").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build kvmesh: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port p such that p and p+HealthPortOffset
// are free (the automanaged provider's health endpoint).
func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if p+cluster.HealthPortOffset > 65535 {
			continue
		}
		h, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", p+cluster.HealthPortOffset))
		if err != nil {
			continue
		}
		_ = h.Close()
		return p
	}
	t.Fatal("no free port pair")
	return 0
}

type node struct {
	addr string
	cmd  *exec.Cmd
}

// startNodes starts n `kvmesh node` processes with the automanaged
// provider and waits until each has joined.
func startNodes(t *testing.T, n int) []*node { return startNodesWith(t, n, nil) }

// startNode starts one `kvmesh node --listen addr args...` and waits until
// it has joined; cleanup kills it.
func startNode(t *testing.T, addr string, args ...string) *node {
	t.Helper()
	cmd := exec.Command(kvmeshBin, append([]string{"node", "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), "NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	dieWithParent(cmd)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("node %s did not start within 20 s", addr)
	}
	return &node{addr: addr, cmd: cmd}
}

func itoa(i int) string { return strconv.Itoa(i) }

func join(s []string) string { return strings.Join(s, ",") }

// startNodesWith starts n nodes; provider, if set, gives the membership
// flags instead of the automanaged member list.
func startNodesWith(t *testing.T, n int, provider []string) []*node {
	t.Helper()
	var addrs []string
	for range n {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	}
	var nodes []*node
	for _, a := range addrs {
		args := []string{"--members", strings.Join(addrs, ",")}
		if provider != nil {
			args = provider
		}
		nodes = append(nodes, startNode(t, a, args...))
	}
	return nodes
}

func newClient(t *testing.T, nodes []*node) *cluster.Runtime {
	t.Helper()
	var members []string
	for _, n := range nodes {
		members = append(members, n.addr)
	}
	return newClientWith(t, cluster.Config{Members: members})
}

func newClientWith(t *testing.T, cfg cluster.Config) *cluster.Runtime {
	t.Helper()
	cfg.Listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg.RequestTimeout = time.Second
	cfg.Logger = slog.New(slog.DiscardHandler)
	rt, err := cluster.NewRuntime(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	time.Sleep(2 * time.Second) // the automanaged provider polls the members' health every second
	return rt
}

func mambaSpec(layers int) actors.Spec {
	return actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mamba.Metadata{NumHiddenLayers: layers, BatchSize: 2,
		IntermediateSize: 8, SSMStateSize: 4, ConvKernelSize: 4}}}
}

// stepWrites is a decode step of every layer: a conv column shifted in and
// a new SSM state.
func stepWrites(r *rand.Rand, layers, pos int) []actors.LayerWrite {
	var ws []actors.LayerWrite
	for l := range layers {
		ws = append(ws, actors.LayerWrite{Layer: l, Write: &actors.MambaWrite{ConvSSM: actors.ConvSSM{
			ConvColumn: randTensor(r, tensor.Float32, 2, 8), CachePosition: pos, SSMState: randTensor(r, tensor.Float32, 2, 8, 4)}}})
	}
	return ws
}

// stepper is what the embedded and the clustered caches share.
type stepper interface {
	Step(ctx context.Context, base uint64, writes []actors.LayerWrite) (uint64, []actors.Result, error)
	Current(ctx context.Context) (actors.Version, error)
}

func viewBytes(t *testing.T, v actors.Version) [][]byte {
	t.Helper()
	var out [][]byte
	for _, view := range v.Views {
		b, err := view.(mamba.View).MarshalBinary()
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}

// A client drives steps of a Mamba cache whose layers are grains on three
// node processes, and every version it reads is byte-identical to the
// embedded runtime's after the same steps; a stale base is refused.
func TestClusterMatchesEmbedded(t *testing.T) {
	nodes := startNodes(t, 3)
	matchesEmbedded(t, newClient(t, nodes))
}

// etcdEndpoint is where .ci/run starts etcd (KVMESH_ETCD overrides it).
func etcdEndpoint() string {
	if e := os.Getenv("KVMESH_ETCD"); e != "" {
		return e
	}
	return "127.0.0.1:23790"
}

// The same steps with the etcd provider: two node processes and the
// client register in a real etcd. Skipped when no etcd answers at
// KVMESH_ETCD (default 127.0.0.1:23790; .ci/run starts one there).
func TestClusterEtcd(t *testing.T) {
	ep := etcdEndpoint()
	conn, err := net.DialTimeout("tcp", ep, time.Second)
	if err != nil {
		t.Skipf("no etcd reachable at %s (set KVMESH_ETCD, or run .ci/run, which starts one): %v", ep, err)
	}
	_ = conn.Close()
	startNodesWith(t, 2, []string{"--provider", "etcd", "--etcd", ep})
	matchesEmbedded(t, newClientWith(t, cluster.Config{Provider: "etcd", Etcd: []string{ep}}))
}

func matchesEmbedded(t *testing.T, rt *cluster.Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const layers = 4
	clustered, err := rt.NewCache("c1", mambaSpec(layers))
	require.NoError(t, err)
	emb, err := actors.NewRuntime()
	require.NoError(t, err)
	defer emb.Close()
	embedded, err := emb.NewCache("c1", mambaSpec(layers))
	require.NoError(t, err)

	hosts := map[string]bool{}
	for l := range layers {
		h, err := rt.Placement("c1", l, 0)
		require.NoError(t, err)
		hosts[h] = true
	}
	t.Logf("4 layers on %d members", len(hosts))

	r1, r2 := rand.New(rand.NewPCG(7, 7)), rand.New(rand.NewPCG(7, 7))
	for step := range 5 {
		for _, c := range []struct {
			s stepper
			r *rand.Rand
		}{{clustered, r1}, {embedded, r2}} {
			v, _, err := c.s.Step(ctx, uint64(step), stepWrites(c.r, layers, step))
			require.NoError(t, err)
			require.Equal(t, uint64(step+1), v)
		}
		cv, err := clustered.Current(ctx)
		require.NoError(t, err)
		ev, err := embedded.Current(ctx)
		require.NoError(t, err)
		require.Equal(t, ev.Number, cv.Number)
		require.Equal(t, viewBytes(t, ev), viewBytes(t, cv), "step %d", step)
	}
	_, _, err = clustered.Step(ctx, 2, stepWrites(r1, layers, 0))
	require.ErrorIs(t, err, actors.ErrStale)
	require.NoError(t, clustered.Close())

	// a paged cache's page manager is a grain too, with EasyDeL's allocation order
	pm, err := rt.NewPageManager(ctx, "p1", paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 5,
		NumPagesPerSequence: 2, MaxSequences: 8, PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 2, HBMUtilization: 0.5})
	require.NoError(t, err)
	pages, free, err := pm.AllocPrefillPages(ctx, 6)
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 2}, pages)
	assert.Equal(t, 2, free)
	_, _, err = pm.AllocPages(ctx, 3)
	require.ErrorIs(t, err, pagemanager.ErrNoFreePages)
}

// kill -9 of a member during decode: the caches with a layer on it answer
// ErrStateLost naming the cache and its sequences (never zeros), the other
// caches keep stepping, and re-creating a lost cache works. The recovery
// time (kill to the re-created cache's first step) is logged.
func TestNodeLossStateLost(t *testing.T) {
	nodes := startNodes(t, 3)
	rt := newClient(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	const caches, layers = 8, 2
	r := rand.New(rand.NewPCG(1, 2))
	type entry struct {
		c       *cluster.Cache
		hosts   map[string]bool
		version uint64
	}
	var all []*entry
	for i := range caches {
		id := fmt.Sprintf("seqs%d", i)
		c, err := rt.NewCache(id, mambaSpec(layers))
		require.NoError(t, err)
		e := &entry{c: c, hosts: map[string]bool{}}
		for l := range layers {
			h, err := rt.Placement(id, l, 0)
			require.NoError(t, err)
			e.hosts[h] = true
		}
		for range 3 {
			e.version, _, err = c.Step(ctx, e.version, stepWrites(r, layers, int(e.version)))
			require.NoError(t, err)
		}
		all = append(all, e)
	}
	// kill the member hosting the first cache's layer 0
	victimAddr, err := rt.Placement("seqs0", 0, 0)
	require.NoError(t, err)
	var victim *node
	for _, n := range nodes {
		if n.addr == victimAddr {
			victim = n
		}
	}
	require.NotNil(t, victim, "layer 0 of seqs0 is on %s, not a node", victimAddr)
	// a paged cache with a pool and two sequences, its layer 0 there too
	pagedSpec := kindCases(t)[1].spec
	ps := *pagedSpec.Paged
	ps.Pool = &pagemanager.PoolConfig{PrefixCaching: true}
	pagedSpec.Paged = &ps
	var pagedID string
	for i := 0; pagedID == ""; i++ {
		require.Less(t, i, 200, "no paged cache id placed on the victim")
		id := fmt.Sprintf("pages%d", i)
		if h, err := rt.Placement(id, 0, 0); err == nil && h == victimAddr {
			pagedID = id
		}
	}
	pc, err := rt.NewCache(pagedID, pagedSpec)
	require.NoError(t, err)
	for _, seq := range []pagemanager.SeqID{7, 9} {
		_, _, err := pc.AddSequence(ctx, seq, pagemanager.Request{Tokens: []int32{1, 2, 3, int32(seq)}})
		require.NoError(t, err)
	}
	killed := time.Now()
	require.NoError(t, victim.cmd.Process.Signal(syscall.SIGKILL))

	var lost, kept []*entry
	for _, e := range all {
		if e.hosts[victimAddr] {
			lost = append(lost, e)
		} else {
			kept = append(kept, e)
		}
	}
	t.Logf("killed %s: %d caches had a layer there, %d did not", victimAddr, len(lost), len(kept))

	for _, e := range lost {
		var err error
		for ctx.Err() == nil {
			_, _, err = e.c.Step(ctx, e.version, stepWrites(r, layers, int(e.version)))
			require.Error(t, err, "cache %s stepped with a layer on a killed member", e.c.ID())
			if errors.Is(err, cluster.ErrStateLost) {
				break
			}
			time.Sleep(200 * time.Millisecond) // ErrUnreachable until the members drop the dead one
		}
		require.ErrorIs(t, err, cluster.ErrStateLost)
		assert.Contains(t, err.Error(), "cache "+e.c.ID())
		assert.Contains(t, err.Error(), "sequences 0..1")
		_, err = e.c.Current(ctx)
		require.ErrorIs(t, err, cluster.ErrStateLost, "a lost cache never reads as zeros")
	}
	t.Logf("state loss detected %v after the kill", time.Since(killed).Round(time.Millisecond))
	_, err = pc.Current(ctx)
	require.ErrorIs(t, err, cluster.ErrStateLost)
	assert.Contains(t, err.Error(), "cache "+pagedID)
	assert.Contains(t, err.Error(), "sequences in its pool [7 9]")
	for _, e := range kept {
		v, _, err := e.c.Step(ctx, e.version, stepWrites(r, layers, int(e.version)))
		require.NoError(t, err, "cache %s had no layer on the killed member", e.c.ID())
		require.Equal(t, e.version+1, v)
	}
	re, err := rt.NewCache(lost[0].c.ID(), mambaSpec(layers))
	require.NoError(t, err)
	v, _, err := re.Step(ctx, 0, stepWrites(r, layers, 0))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), v)
	t.Logf("recovery time (kill to the re-created cache's first step): %v", time.Since(killed).Round(time.Millisecond))
}
