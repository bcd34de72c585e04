package transfer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// Sentinel errors of the package.
var (
	// ErrConfig reports an invalid Config.
	ErrConfig = errors.New("transfer: bad config")
	// ErrBundle reports a malformed Bundle (a bad name, dtype or tensor).
	ErrBundle = errors.New("transfer: bad bundle")
	// ErrUnacked reports a request the receiver did not acknowledge after
	// every retry: the peer is down, unreachable or refused the connection
	// (a peer without a valid certificate, with mutual TLS).
	ErrUnacked = errors.New("transfer: not acknowledged")
	// ErrRejected reports a request the receiver answered with an error
	// status (a malformed transfer, or its handler failed).
	ErrRejected = errors.New("transfer: rejected by the receiver")
	// ErrClosed reports a Send on a closed Node.
	ErrClosed = errors.New("transfer: node closed")
)

// MaxChunkSize is the largest chunk payload: DESIGN.md section 5 bounds
// every remote message's tensor data at 1 MiB.
const MaxChunkSize = 1 << 20

// receiverName is the receiver actor's name on every node.
const receiverName = "kvmesh-transfer"

// TLSFiles names the PEM files of mutual TLS: this node's certificate and
// key, and the CA that signs every peer's certificate. Both directions
// present and verify certificates: a peer without a certificate signed by
// CA is refused during the handshake.
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// Config configures a Node. The zero values of the optional fields take
// the defaults shown.
type Config struct {
	// Listen is host:port of the gRPC listener; port 0 picks a free one.
	Listen string
	// Advertise is host:port peers reach this node at ("" = the listener's
	// address).
	Advertise string
	// TLS, when set, turns on mutual TLS.
	TLS *TLSFiles
	// BulkListen is host:port of the side channel's TCP listener (bulk.go);
	// "" listens on Listen's host at a free port. Peers reach it at this
	// node's advertised host.
	BulkListen string
	// Chunked makes Send carry tensor data in TensorChunk messages over
	// protoactor instead of the side channel: the slower fallback (the
	// node still accepts bulk transfers).
	Chunked bool
	// ChunkSize is the data bytes per TensorChunk (default and maximum
	// MaxChunkSize).
	ChunkSize int
	// Window is how many chunks a Send keeps in flight (default 16).
	Window int
	// AckTimeout is how long a request waits for its ack before it is
	// retried (default 5 s).
	AckTimeout time.Duration
	// Retries is how many times a request is re-sent after an ack timeout
	// (default 3).
	Retries int
	// MaxMessageSize is the gRPC limit on one frame, set the same on the
	// server, the dial side and both directions of a call (default 64 MiB);
	// it must hold BatchSize chunks.
	MaxMessageSize int
	// BatchSize is how many messages protoactor's endpoint writer packs into
	// one gRPC frame (default 16).
	BatchSize int
	// ConnectRetries is how many times protoactor's endpoint writer tries
	// to connect to a peer, sleeping 2 s after each failure inside its
	// actor (default 5, protoactor's own default).
	ConnectRetries int
	// Logger receives protoactor's logs (nil: errors only, to stderr).
	Logger *slog.Logger
	// Handler receives every committed transfer, once per transfer id; the
	// commit's ack carries its error. nil accepts and drops transfers.
	Handler func(ctx context.Context, b Bundle) error
}

// withDefaults returns c with its zero optional fields defaulted.
func (c Config) withDefaults() Config {
	if c.ChunkSize == 0 {
		c.ChunkSize = MaxChunkSize
	}
	if c.Window == 0 {
		c.Window = 16
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.Retries == 0 {
		c.Retries = 3
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 64 << 20
	}
	if c.BatchSize == 0 {
		c.BatchSize = 16
	}
	if c.ConnectRetries == 0 {
		c.ConnectRetries = 5
	}
	return c
}

// Validate reports a bad field, naming it and its value.
func (c Config) Validate() error {
	c = c.withDefaults()
	if _, _, err := splitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%w: listen %q: %v", ErrConfig, c.Listen, err)
	}
	if c.BulkListen != "" {
		if _, _, err := splitHostPort(c.BulkListen); err != nil {
			return fmt.Errorf("%w: bulk listen %q: %v", ErrConfig, c.BulkListen, err)
		}
	}
	if c.Advertise != "" {
		if _, _, err := splitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("%w: advertise %q: %v", ErrConfig, c.Advertise, err)
		}
	}
	switch {
	case c.ChunkSize < 0 || c.ChunkSize > MaxChunkSize || c.ChunkSize%8 != 0:
		return fmt.Errorf("%w: chunk size %d (want a multiple of 8 in 8..%d)", ErrConfig, c.ChunkSize, MaxChunkSize)
	case c.Window < 0 || c.Retries < 0 || c.AckTimeout < 0 || c.BatchSize < 0 || c.ConnectRetries < 0:
		return fmt.Errorf("%w: window %d, retries %d, ack timeout %v and batch size %d must not be negative", ErrConfig, c.Window, c.Retries, c.AckTimeout, c.BatchSize)
	case c.MaxMessageSize < c.BatchSize*(c.ChunkSize+4096):
		return fmt.Errorf("%w: max message size %d cannot hold a batch of %d chunks of %d bytes", ErrConfig, c.MaxMessageSize, c.BatchSize, c.ChunkSize)
	}
	if t := c.TLS; t != nil && (t.CertFile == "" || t.KeyFile == "" || t.CAFile == "") {
		return fmt.Errorf("%w: mutual TLS needs a cert, a key and a CA file (got %q, %q, %q)", ErrConfig, t.CertFile, t.KeyFile, t.CAFile)
	}
	return nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not in 0..65535", p)
	}
	return host, port, nil
}

// ServerTLS loads files into a tls.Config for a gRPC server that requires
// and verifies client certificates signed by the CA.
func (f TLSFiles) ServerTLS() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

// ClientTLS loads files into a tls.Config for dialing peers: it presents
// the certificate and verifies the server's against the CA.
func (f TLSFiles) ClientTLS() (*tls.Config, error) {
	cert, pool, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (f TLSFiles) load() (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: cert %s, key %s: %v", ErrConfig, f.CertFile, f.KeyFile, err)
	}
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: CA: %v", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: CA file %s holds no PEM certificate", ErrConfig, f.CAFile)
	}
	return cert, pool, nil
}

// RemoteOptions returns the protoactor remote options of a link with the
// given gRPC frame limit, endpoint-writer batch size and optional mutual
// TLS: the same limits on the server, the dial side and both directions of
// calls (a limit raised on one side only still drops big batches), and
// transport credentials that replace protoactor's default insecure dial
// option. Cluster members use the same options.
func RemoteOptions(maxMessageSize, batchSize int, files *TLSFiles) ([]remote.ConfigOption, error) {
	server := []grpc.ServerOption{grpc.MaxRecvMsgSize(maxMessageSize), grpc.MaxSendMsgSize(maxMessageSize)}
	creds := insecure.NewCredentials()
	if files != nil {
		st, err := files.ServerTLS()
		if err != nil {
			return nil, err
		}
		ct, err := files.ClientTLS()
		if err != nil {
			return nil, err
		}
		server = append(server, grpc.Creds(credentials.NewTLS(st)))
		creds = credentials.NewTLS(ct)
	}
	return []remote.ConfigOption{
		remote.WithServerOptions(server...),
		remote.WithDialOptions(grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize), grpc.MaxCallSendMsgSize(maxMessageSize))),
		remote.WithEndpointWriterBatchSize(batchSize),
	}, nil
}

// Node is one end of KV transfers: an actor system with protoactor remote
// listening on Config.Listen, a receiver actor that reassembles incoming
// transfers, and Send for outgoing ones. Every node both sends and
// receives. It is safe for concurrent use.
type Node struct {
	cfg    Config
	sys    *actor.ActorSystem
	remote *remote.Remote
	recv   *actor.PID

	bulk   *bulkServer
	client *bulkClient
	mu     sync.Mutex
	closed bool
	seq    uint64
}

// NewNode starts a node.
func NewNode(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	host, port, _ := splitHostPort(cfg.Listen)
	opts, err := RemoteOptions(cfg.MaxMessageSize, cfg.BatchSize, cfg.TLS)
	if err != nil {
		return nil, err
	}
	if port == 0 {
		// protoactor reports an explicit advertised host verbatim; with a
		// random port we pick the port first so the address is known.
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("%w: listen %s: %v", ErrConfig, cfg.Listen, err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
	}
	opts = append(opts, func(rc *remote.Config) { rc.MaxRetryCount = cfg.ConnectRetries })
	if cfg.Advertise != "" {
		opts = append(opts, remote.WithAdvertisedHost(cfg.Advertise))
	}
	logger := cfg.Logger
	if logger == nil {
		logger = quietLogger(nil)
	}
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return logger }))
	r := remote.NewRemote(sys, remote.Configure(host, port, opts...))
	r.Start()
	n := &Node{cfg: cfg, sys: sys, remote: r}
	var serverTLS, clientTLS *tls.Config
	if cfg.TLS != nil {
		if serverTLS, err = cfg.TLS.ServerTLS(); err == nil {
			clientTLS, err = cfg.TLS.ClientTLS()
		}
		if err != nil {
			r.Shutdown(false)
			return nil, err
		}
	}
	n.client = &bulkClient{tls: clientTLS, timeout: cfg.AckTimeout, addrs: map[string]string{}, idle: map[string]idleConn{}}
	bulkListen := cfg.BulkListen
	if bulkListen == "" {
		bulkListen = net.JoinHostPort(host, "0")
	}
	advHost, _, _ := net.SplitHostPort(sys.Address())
	if n.bulk, err = startBulk(bulkListen, advHost, serverTLS, cfg.AckTimeout); err != nil {
		r.Shutdown(false)
		return nil, err
	}
	n.recv, err = sys.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &receiver{handler: cfg.Handler, transfers: map[string]*incoming{}, bulk: n.bulk}
	}), receiverName)
	if err != nil {
		n.bulk.close()
		r.Shutdown(false)
		return nil, fmt.Errorf("%w: spawn receiver: %v", ErrConfig, err)
	}
	return n, nil
}

// quietLogger keeps protoactor's logging to errors.
func quietLogger(*actor.ActorSystem) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// Address returns host:port peers send to.
func (n *Node) Address() string { return n.sys.Address() }

// BulkAddress returns host:port of the node's side channel (bulk.go).
func (n *Node) BulkAddress() string { return n.bulk.addr }

// Close stops the receiver and the remote listener.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	_ = n.sys.Root.StopFuture(n.recv).Wait()
	n.bulk.close()
	n.client.close()
	shutdownRemote(n.remote)
	n.sys.Shutdown()
	return nil
}

// shutdownRemote stops r gracefully. protoactor's endpoint manager can
// panic there ("send on closed channel") when a peer's connection closes
// at the same moment (its reader closes the channel the manager signals
// it on before it unregisters it); the panic is recovered and the gRPC
// server stopped hard instead, so closing a node never crashes its host.
func shutdownRemote(r *remote.Remote) {
	defer func() {
		if recover() != nil {
			r.Shutdown(false)
		}
	}()
	r.Shutdown(true)
}

// transferID returns a fresh id, unique per sending node.
func (n *Node) transferID() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return "", ErrClosed
	}
	n.seq++
	return fmt.Sprintf("%s/%d/%d", n.Address(), time.Now().UnixNano(), n.seq), nil
}

// request sends msg to the receiver at addr and waits for its ack,
// re-sending it after each ack timeout up to Retries times. Every request
// of the protocol is idempotent, so a re-send after a lost ack is safe.
func (n *Node) request(ctx context.Context, addr string, msg any, what string) (*messages.TransferAck, error) {
	pid := actor.NewPID(addr, receiverName)
	var last error
	for attempt := 0; attempt <= n.cfg.Retries; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("transfer to %s: %s: %w", addr, what, err)
		}
		timeout := n.cfg.AckTimeout
		if dl, ok := ctx.Deadline(); ok {
			timeout = min(timeout, time.Until(dl))
		}
		res, err := n.sys.Root.RequestFuture(pid, msg, timeout).Result()
		if err != nil {
			last = err
			continue
		}
		ack, ok := res.(*messages.TransferAck)
		if !ok {
			return nil, fmt.Errorf("%w: transfer to %s: %s: reply %T is not a TransferAck", ErrRejected, addr, what, res)
		}
		if s := ack.GetStatus(); s.GetCode() != messages.Code_CODE_OK {
			return ack, fmt.Errorf("%w: transfer to %s: %s: %s: %s", ErrRejected, addr, what, s.GetCode(), s.GetMessage())
		}
		return ack, nil
	}
	return nil, fmt.Errorf("%w: transfer to %s: %s: no ack after %d attempts of %v (last: %v)", ErrUnacked, addr, what, n.cfg.Retries+1, n.cfg.AckTimeout, last)
}

// Send moves b to the node at addr: a TransferBegin, every tensor's data
// in TensorChunks of at most ChunkSize bytes (Window in flight), and a
// TransferCommit, each acknowledged and re-sent when its ack is missing.
// It returns once the receiver's handler has taken the bundle (its error,
// if any, wrapped in ErrRejected), or fails with ErrUnacked when a request
// goes unacknowledged after every retry.
func (n *Node) Send(ctx context.Context, addr string, b Bundle) error {
	if err := b.Validate(); err != nil {
		return err
	}
	id, err := n.transferID()
	if err != nil {
		return err
	}
	begin := &messages.TransferBegin{TransferId: id, Metadata: b.Metadata}
	type job struct {
		t     tensor.Tensor
		name  string
		index uint32
		count uint32
	}
	var jobs []job
	for i, name := range b.Names {
		t := b.Tensors[i]
		count := chunkCount(t.NumBytes(), n.cfg.ChunkSize)
		begin.Tensors = append(begin.Tensors, &messages.TransferTensor{Name: name, Dtype: messages.DType(t.DType()), Shape: int64s(t.Shape()), Chunks: uint32(count)})
		for c := range count {
			jobs = append(jobs, job{t: t, name: name, index: uint32(c), count: uint32(count)})
		}
	}
	if !n.cfg.Chunked {
		return n.sendBulk(ctx, addr, id, begin, b)
	}
	if _, err := n.request(ctx, addr, begin, "begin "+id); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan job)
	errs := make(chan error, n.cfg.Window)
	var wg sync.WaitGroup
	for range min(n.cfg.Window, max(len(jobs), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				msg, err := n.chunk(id, j.name, j.t, j.index, j.count)
				if err == nil {
					_, err = n.request(ctx, addr, msg, fmt.Sprintf("chunk %d of %d of %s", j.index, j.count, j.name))
				}
				if err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("transfer to %s: %w", addr, err)
	}
	_, err = n.request(ctx, addr, &messages.TransferCommit{TransferId: id}, "commit "+id)
	return err
}

// sendBulk moves b's bytes over the receiver's side channel: a bulk
// begin, whose ack names the side channel, the stream, re-sent whole on a
// new connection when its connection fails (up to Retries times), and a
// commit carrying every tensor's CRC-32. Once a peer's side channel is
// known the stream starts while the begin is on its way (the receiver
// waits for the begin before it stores a frame).
func (n *Node) sendBulk(ctx context.Context, addr, id string, begin *messages.TransferBegin, b Bundle) error {
	begin.Bulk = true
	for _, t := range begin.Tensors {
		t.Chunks = 0
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.client.mu.Lock()
	bulk := n.client.addrs[addr]
	n.client.mu.Unlock()
	beginErr := make(chan error, 1)
	go func() {
		ack, err := n.request(ctx, addr, begin, "begin "+id)
		if err == nil && ack.GetBulkAddress() == "" {
			err = fmt.Errorf("%w: transfer to %s: begin %s: the ack names no side channel", ErrRejected, addr, id)
		}
		if err == nil {
			n.client.mu.Lock()
			n.client.addrs[addr] = ack.GetBulkAddress()
			n.client.mu.Unlock()
		} else {
			cancel() // a stream started meanwhile stops
		}
		beginErr <- err
	}()
	if bulk == "" {
		if err := <-beginErr; err != nil {
			return err
		}
		n.client.mu.Lock()
		bulk = n.client.addrs[addr]
		n.client.mu.Unlock()
		beginErr <- nil
	}
	var crcs []uint32
	var conn net.Conn
	var err error
	for attempt := 0; ; attempt++ {
		if conn, err = n.client.get(ctx, bulk); err == nil {
			if crcs, err = streamBulk(ctx, conn, n.cfg.AckTimeout, id, b); err == nil {
				break
			}
			_ = conn.Close()
		}
		if errors.Is(err, ErrBundle) || ctx.Err() != nil || attempt >= n.cfg.Retries {
			break
		}
	}
	if berr := <-beginErr; berr != nil {
		if err == nil {
			_ = conn.Close()
		}
		return berr
	}
	if err != nil {
		if errors.Is(err, ErrBundle) {
			return err
		}
		return fmt.Errorf("%w: transfer to %s: bulk stream of %s to %s failed after %d attempts: %v", ErrUnacked, addr, id, bulk, n.cfg.Retries+1, err)
	}
	// The commit goes out while the receiver reads the stream's last bytes
	// (it waits for them); its ack is the transfer's outcome, the stream's
	// answer only decides whether conn can carry the next stream.
	reply := make(chan error, 1)
	go func() { reply <- bulkReply(conn, n.cfg.AckTimeout, id) }()
	_, err = n.request(ctx, addr, &messages.TransferCommit{TransferId: id, Crc32: crcs}, "commit "+id)
	if rerr := <-reply; rerr == nil {
		n.client.put(bulk, conn)
	} else {
		_ = conn.Close()
	}
	return err
}

// chunk builds chunk index of t's data.
func (n *Node) chunk(id, name string, t tensor.Tensor, index, count uint32) (*messages.TensorChunk, error) {
	size := t.DType().Size()
	off := int(index) * n.cfg.ChunkSize
	end := min(off+n.cfg.ChunkSize, t.NumBytes())
	data := make([]byte, end-off)
	if err := t.ReadBytes(data, t.DType(), off/size); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBundle, name, err)
	}
	return &messages.TensorChunk{TransferId: id, Name: name, Dtype: messages.DType(t.DType()), Shape: int64s(t.Shape()),
		Index: index, Count: count, Offset: uint64(off), Data: data}, nil
}

// chunkCount is how many chunks of size carry n bytes (at least one, so an
// empty tensor still has its chunk).
func chunkCount(n, size int) int { return max(1, (n+size-1)/size) }

func int64s(s []int) []int64 {
	out := make([]int64, len(s))
	for i, v := range s {
		out[i] = int64(v)
	}
	return out
}
