//go:build !race

// These tests run two protoactor remotes in one process, and protoactor's
// remote races inside the library then (Remote.Start sets gRPC's global
// logger while the other remote's goroutines read it: notes/protoactor.md
// pitfall 7). They are built without -race only; .ci/run runs this package
// once more without the race detector.

package transfer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

func newNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.ConnectRetries == 0 {
		cfg.ConnectRetries = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n, err := NewNode(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func pagedMeta(layers, pages int) paged.Metadata {
	return paged.Metadata{BatchSize: 2, NumHiddenLayers: layers, NumPagesPerLayer: pages, NumPagesPerSequence: pages - 1,
		MaxSequences: 4 * (pages - 1), PageSize: 4, NumKVHeads: 2, KVHeadDimSize: 8, HBMUtilization: 0.5}
}

// prefill creates a bfloat16 paged cache on rt, skips `skip` pages (so
// the sequence's pages differ between caches), and prefills one sequence
// of length tokens; it returns the cache, its version and the page table.
func prefill(t *testing.T, rt *actors.Runtime, id string, meta paged.Metadata, skip, length int, r *mrand.Rand) (*actors.Cache, actors.Version, []int32) {
	t.Helper()
	return prefillAs(t, rt, id, meta, paged.Storage{DType: tensor.BFloat16}, skip, length, r)
}

// prefillAs is prefill for a cache stored as st (values drawn in st's
// dtype, quantized by the cache when st says so).
func prefillAs(t *testing.T, rt *actors.Runtime, id string, meta paged.Metadata, st paged.Storage, skip, length int, r *mrand.Rand) (*actors.Cache, actors.Version, []int32) {
	t.Helper()
	ctx := context.Background()
	c, err := rt.NewCache(id, actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: st.DType, Quantization: st.Quantization, BlockSize: st.BlockSize}})
	require.NoError(t, err)
	if skip > 0 {
		_, _, err = c.AllocPages(ctx, skip)
		require.NoError(t, err)
	}
	table, _, err := c.AllocPrefillPages(ctx, length)
	require.NoError(t, err)
	var writes []actors.LayerWrite
	for l := range meta.NumHiddenLayers {
		writes = append(writes, actors.LayerWrite{Layer: l, Write: &actors.PagedWrite{
			PrefillKey:   randomTensor(r, st.DType, length, meta.NumKVHeads, meta.KVHeadDimSize),
			PrefillValue: randomTensor(r, st.DType, length, meta.NumKVHeads, meta.KVHeadDimSize),
			Step:         paged.StepMetadata{PrefillLength: int32(length), PrefillPageTable: table}}})
	}
	_, _, err = c.Step(ctx, 0, writes)
	require.NoError(t, err)
	v, err := c.Current(ctx)
	require.NoError(t, err)
	return c, v, table
}

// A sequence prefilled on one runtime arrives, through two nodes on
// loopback, in another runtime's cache as one new version whose pages
// (different physical pages) hold the same bytes, for chunk sizes that cut
// tensors into many chunks and into one.
func TestTransferPagedSequence(t *testing.T) {
	for _, tc := range []struct {
		name      string
		chunk     int
		length    int
		withState bool
	}{
		{"many small chunks", 64, 37, false},
		{"one chunk per tensor", MaxChunkSize, 13, false},
		{"with recurrent states", 256, 9, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mrand.New(mrand.NewPCG(1, uint64(tc.length)))
			meta := pagedMeta(3, 24)
			pre, err := actors.NewRuntime()
			require.NoError(t, err)
			defer pre.Close()
			dec, err := actors.NewRuntime()
			require.NoError(t, err)
			defer dec.Close()
			_, srcVersion, srcTable := prefill(t, pre, "pre", meta, 0, tc.length, r)
			other, _, _ := prefill(t, dec, "dec", meta, 2, 5, r) // the decode cache already holds a sequence
			before, err := other.Current(context.Background())
			require.NoError(t, err)

			type arrival struct {
				version uint64
				table   []int32
				bundle  Bundle
			}
			got := make(chan arrival, 4)
			b := newNode(t, Config{ChunkSize: tc.chunk, Handler: func(ctx context.Context, bu Bundle) error {
				table, _, err := other.AllocPrefillPages(ctx, tc.length)
				if err != nil {
					return err
				}
				cur, err := other.Current(ctx)
				if err != nil {
					return err
				}
				v, err := ApplyPaged(ctx, other, cur.Number, table, bu)
				got <- arrival{v, table, bu}
				return err
			}})
			a := newNode(t, Config{ChunkSize: tc.chunk})

			var states map[string]tensor.Tensor
			if tc.withState {
				states = map[string]tensor.Tensor{StateName(3, "ssm"): randomTensor(r, tensor.Float32, 4, 16, 8)}
			}
			bundle, err := PagedSequence(srcVersion, srcTable, tc.length, states)
			require.NoError(t, err)
			require.NoError(t, a.Send(context.Background(), b.Address(), bundle))
			arr := <-got
			assert.Equal(t, before.Number+1, arr.version)
			assert.NotEqual(t, srcTable, arr.table, "the decode cache placed the sequence on other pages")

			after, err := other.Current(context.Background())
			require.NoError(t, err)
			for l := range meta.NumHiddenLayers {
				sv, err := srcVersion.Layer(l)
				require.NoError(t, err)
				dv, err := after.Layer(l)
				require.NoError(t, err)
				sk, sval, err := sv.(paged.View).Gather(srcTable, tc.length)
				require.NoError(t, err)
				dk, dval, err := dv.(paged.View).Gather(arr.table, tc.length)
				require.NoError(t, err)
				assert.Equal(t, sk.Bytes(), dk.Bytes(), "layer %d key", l)
				assert.Equal(t, sval.Bytes(), dval.Bytes(), "layer %d value", l)
				// the sequence that was already there is untouched
				bv, _ := before.Layer(l)
				ok, oval, err := bv.(paged.View).Gather([]int32{3, 4}, 5)
				require.NoError(t, err)
				nk, nval, err := dv.(paged.View).Gather([]int32{3, 4}, 5)
				require.NoError(t, err)
				assert.Equal(t, ok.Bytes(), nk.Bytes())
				assert.Equal(t, oval.Bytes(), nval.Bytes())
			}
			if tc.withState {
				st, ok := arr.bundle.Tensor(StateName(3, "ssm"))
				require.True(t, ok)
				assert.True(t, st.Equal(states[StateName(3, "ssm")]))
			}
		})
	}
}

// The receiver makes every request idempotent: a chunk or a commit sent
// twice (as a sender's retry after a lost ack does) stores the chunk once
// and runs the handler once, and the second commit gets the first one's
// outcome; a commit with missing chunks or an unknown transfer is refused.
func TestReceiverIdempotent(t *testing.T) {
	sys := actor.NewActorSystem(actor.WithLoggerFactory(quietLogger))
	defer sys.Shutdown()
	var calls atomic.Int32
	var seen Bundle
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return &receiver{transfers: map[string]*incoming{}, handler: func(_ context.Context, b Bundle) error {
			calls.Add(1)
			seen = b
			return fmt.Errorf("handler says no")
		}}
	}))
	ask := func(m any) *messages.TransferAck {
		res, err := sys.Root.RequestFuture(pid, m, 5*time.Second).Result()
		require.NoError(t, err)
		return res.(*messages.TransferAck)
	}
	data := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	begin := &messages.TransferBegin{TransferId: "x", Tensors: []*messages.TransferTensor{{Name: "t", Dtype: messages.DType_DTYPE_FLOAT32, Shape: []int64{3}, Chunks: 2}}}
	chunk := func(i int) *messages.TensorChunk {
		return &messages.TensorChunk{TransferId: "x", Name: "t", Index: uint32(i), Count: 2, Offset: uint64(8 * i), Data: data[8*i : min(8*i+8, 12)]}
	}
	assert.Equal(t, messages.Code_CODE_OK, ask(begin).Status.Code)
	assert.Equal(t, messages.Code_CODE_OK, ask(begin).Status.Code)
	assert.Equal(t, messages.Code_CODE_OK, ask(chunk(1)).Status.Code)
	assert.Equal(t, messages.Code_CODE_OK, ask(chunk(1)).Status.Code)
	early := ask(&messages.TransferCommit{TransferId: "x"})
	assert.Equal(t, messages.Code_CODE_INVALID_ARGUMENT, early.Status.Code)
	assert.Contains(t, early.Status.Message, "1 chunks missing")
	assert.Equal(t, messages.Code_CODE_OK, ask(chunk(0)).Status.Code)
	first := ask(&messages.TransferCommit{TransferId: "x"})
	second := ask(&messages.TransferCommit{TransferId: "x"})
	assert.Equal(t, messages.Code_CODE_INVALID_ARGUMENT, first.Status.Code)
	assert.Contains(t, first.Status.Message, "handler says no")
	assert.Equal(t, first.Status.Message, second.Status.Message)
	assert.Equal(t, int32(1), calls.Load())
	assert.Equal(t, data, seen.Tensors[0].Bytes())

	unknown := ask(&messages.TransferCommit{TransferId: "y"})
	assert.Contains(t, unknown.Status.Message, "unknown transfer y")
	bad := ask(&messages.TensorChunk{TransferId: "x2", Name: "t"})
	assert.Contains(t, bad.Status.Message, "unknown transfer x2")
}

// A send to an address nobody listens on fails with ErrUnacked after its
// retries, instead of hanging or succeeding silently.
func TestSendUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	a := newNode(t, Config{AckTimeout: 200 * time.Millisecond, Retries: 1})
	err = a.Send(context.Background(), addr, Bundle{Names: []string{"t"}, Tensors: []tensor.Tensor{tensor.Must(tensor.New(tensor.Float32, 4))}})
	require.ErrorIs(t, err, ErrUnacked)
	assert.Contains(t, err.Error(), addr)
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "nohost"}, `listen "nohost"`},
		{Config{Listen: "127.0.0.1:0", ChunkSize: MaxChunkSize + 8}, "chunk size 1048584"},
		{Config{Listen: "127.0.0.1:0", ChunkSize: 12}, "chunk size 12"},
		{Config{Listen: "127.0.0.1:0", MaxMessageSize: 1 << 20}, "max message size 1048576"},
		{Config{Listen: "127.0.0.1:0", TLS: &TLSFiles{CertFile: "c"}}, "needs a cert, a key and a CA"},
		{Config{Listen: "127.0.0.1:0", Advertise: "x:99999"}, `advertise "x:99999"`},
	} {
		err := tc.cfg.Validate()
		require.ErrorIs(t, err, ErrConfig)
		assert.Contains(t, err.Error(), tc.want)
	}
	require.NoError(t, Config{Listen: "127.0.0.1:0"}.Validate())
}

func TestBundleValidate(t *testing.T) {
	x := tensor.Must(tensor.New(tensor.Float32, 2))
	for _, tc := range []struct {
		b    Bundle
		want string
	}{
		{Bundle{Names: []string{"a"}}, "1 names for 0 tensors"},
		{Bundle{Names: []string{"a", "a"}, Tensors: []tensor.Tensor{x, x}}, `duplicate name "a"`},
		{Bundle{Names: []string{""}, Tensors: []tensor.Tensor{x}}, `empty or duplicate name ""`},
		{Bundle{Names: []string{"z"}, Tensors: []tensor.Tensor{{}}}, "tensor z is absent"},
	} {
		err := tc.b.Validate()
		require.ErrorIs(t, err, ErrBundle)
		assert.Contains(t, err.Error(), tc.want)
	}
}

// pki writes a CA and certificates it signs (for 127.0.0.1) into dir, at
// test time: no key is checked in.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
}

func newPKI(t *testing.T, dir, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	p := &pki{dir: dir, caCert: cert, caKey: key, caFile: filepath.Join(dir, name+"-ca.pem")}
	require.NoError(t, os.WriteFile(p.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	return p
}

// issue writes a certificate for 127.0.0.1 signed by p's CA, usable by
// servers and clients, and returns the files with p's CA.
func (p *pki) issue(t *testing.T, name string) *TLSFiles {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	require.NoError(t, err)
	kd, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	f := &TLSFiles{CertFile: filepath.Join(p.dir, name+".pem"), KeyFile: filepath.Join(p.dir, name+"-key.pem"), CAFile: p.caFile}
	require.NoError(t, os.WriteFile(f.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(f.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600))
	return f
}

// With mutual TLS, peers holding certificates of the cluster's CA
// exchange transfers; a peer whose certificate another CA signed, a
// plaintext peer, and a TLS client without a certificate are all refused,
// and the receiver's handler never runs for them.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "cluster")
	rogue := newPKI(t, dir, "rogue")
	var handled atomic.Int32
	b := newNode(t, Config{TLS: ca.issue(t, "b"), Handler: func(context.Context, Bundle) error { handled.Add(1); return nil }})
	x := tensor.Must(tensor.New(tensor.Float32, 1024))
	bundle := Bundle{Names: []string{"x"}, Tensors: []tensor.Tensor{x}}

	good := newNode(t, Config{TLS: ca.issue(t, "a")})
	require.NoError(t, good.Send(context.Background(), b.Address(), bundle))
	assert.Equal(t, int32(1), handled.Load())

	quick := Config{AckTimeout: 300 * time.Millisecond, Retries: 1}
	for name, cfg := range map[string]Config{
		"certificate of another CA": {TLS: rogue.issue(t, "r"), AckTimeout: quick.AckTimeout, Retries: quick.Retries},
		"plaintext":                 quick,
	} {
		t.Run(name, func(t *testing.T) {
			bad := newNode(t, cfg)
			err := bad.Send(context.Background(), b.Address(), bundle)
			require.ErrorIs(t, err, ErrUnacked)
			assert.Equal(t, int32(1), handled.Load())
		})
	}

	t.Run("TLS client without a certificate", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AddCert(ca.caCert)
		conn, err := tls.Dial("tcp", b.Address(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
		if err == nil {
			// TLS 1.3 reports the server's refusal on the first read.
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			_ = conn.Close()
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate")
	})
}

// BenchmarkKVTransfer moves a bundle of one sequence's KV (its size in the
// name) from one node to another over loopback, beside a raw TCP copy of
// the same bytes on loopback (one connection, one 1-byte ack at the end):
// the budget (DESIGN.md section 7) is at least half the raw copy's
// bandwidth. The process holds 256 MiB of resident data meanwhile, as a
// decode node holds its KV cache: with a heap of a few MiB the Go
// collector would run (and return memory to the OS, to fault it in again)
// after every transfer, which measures a toy process rather than the
// transfer (the raw copy allocates nothing, so it is unaffected).
func BenchmarkKVTransfer(b *testing.B) {
	resident := make([]byte, 256<<20)
	defer runtime.KeepAlive(resident)
	for _, mib := range []int{4, 32} {
		size := mib << 20
		x := tensor.Must(tensor.FromBytes(tensor.BFloat16, make([]byte, size), size/2))
		bundle := Bundle{Names: []string{"kv"}, Tensors: []tensor.Tensor{x}}
		for _, path := range []struct {
			name    string
			chunked bool
		}{{"chunked", true}, {"bulk", false}} {
			b.Run(fmt.Sprintf("remote-%s/%dMiB", path.name, mib), func(b *testing.B) {
				dst := newNode(b, Config{})
				src := newNode(b, Config{Chunked: path.chunked})
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if err := src.Send(context.Background(), dst.Address(), bundle); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("rawTCP/%dMiB", mib), func(b *testing.B) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(conn, buf); err != nil {
						return
					}
					if _, err := conn.Write([]byte{1}); err != nil {
						return
					}
				}
			}()
			conn, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			payload := x.Bytes()
			one := make([]byte, 1)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := conn.Write(payload); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(conn, one); err != nil {
					b.Fatal(err)
				}
			}
			_ = conn.Close()
			wg.Wait()
		})
	}
}

// lossy stands in for a node's receiver and drops the first delivery of
// every request (as a lost gRPC batch does, silently), and also the first
// ack of every chunk after handing the chunk on (a lost reply): the
// sender's retries and the receiver's idempotency still deliver the bundle
// exactly once.
type lossy struct {
	next *actor.PID
	seen map[string]int
}

func (l *lossy) Receive(c actor.Context) {
	var key string
	switch m := c.Message().(type) {
	case *messages.TransferBegin:
		key = "begin"
	case *messages.TensorChunk:
		key = fmt.Sprintf("%s/%d", m.Name, m.Index)
	case *messages.TransferCommit:
		key = "commit"
	default:
		return
	}
	l.seen[key]++
	switch l.seen[key] {
	case 1: // the request is lost
	case 2: // the request arrives, its ack is lost
		c.Request(l.next, c.Message())
	default:
		c.Forward(l.next)
	}
}

func TestSendRetriesLostMessages(t *testing.T) {
	for _, chunked := range []bool{true, false} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var calls atomic.Int32
			got := make(chan Bundle, 2)
			b := newNode(t, Config{ChunkSize: 64, Handler: func(_ context.Context, bu Bundle) error {
				calls.Add(1)
				got <- bu
				return nil
			}})
			// put the lossy stand-in under the receiver's name, in front of a real receiver
			require.NoError(t, b.sys.Root.StopFuture(b.recv).Wait())
			inner := b.sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
				return &receiver{handler: b.cfg.Handler, transfers: map[string]*incoming{}, bulk: b.bulk}
			}))
			_, err := b.sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &lossy{next: inner, seen: map[string]int{}} }), receiverName)
			require.NoError(t, err)

			a := newNode(t, Config{ChunkSize: 64, AckTimeout: 300 * time.Millisecond, Retries: 3, Chunked: chunked})
			x := randomTensor(mrand.New(mrand.NewPCG(3, 4)), tensor.Float32, 40, 3) // 480 bytes: 8 chunks
			require.NoError(t, a.Send(context.Background(), b.Address(), Bundle{Names: []string{"x"}, Tensors: []tensor.Tensor{x}}))
			bu := <-got
			assert.True(t, bu.Tensors[0].Equal(x))
			assert.Equal(t, int32(1), calls.Load())
		})
	}
}
