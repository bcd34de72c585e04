package transfer

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// The side channel (bulk path). A receiving node listens on a TCP port
// (Config.BulkListen; with mutual TLS when Config.TLS is set, the same
// certificates as the gRPC link) besides protoactor's gRPC. A bulk transfer
// keeps the actor messages for control: TransferBegin (bulk set; its ack
// carries the side channel's address), then the sender opens a connection
// and streams the tensors' raw bytes, then TransferCommit carries each
// tensor's CRC-32 (IEEE). The commit is sent as soon as the stream is
// written and may overtake its last bytes: the receiver waits for them,
// and commits only when every tensor's bytes arrived in full and their
// checksums match; otherwise (a truncated or corrupted stream) the commit
// is refused and nothing reaches the handler.
//
// Stream format, all integers little-endian: a sequence of frames
//
//	u16 id length | id | u16 name length | name | u64 offset | u64 length | length data bytes
//
// each carrying bytes [offset, offset+length) of tensor name of transfer
// id, ended by an end frame (a u16 id length of 0). Frames of one tensor
// come in offset order; a frame may repeat bytes already received (a
// re-sent stream), never skip any. After the end frame the receiver
// answers
//
//	u8 status (0 OK, 1 error) | u32 message length | message
//
// where OK means every tensor of the transfers named has all its bytes.
const bulkFrameSize = 1 << 20

var crcTable = crc32.IEEETable

// stagedTensor is one tensor of a staged bulk transfer, built as it
// arrives: its bytes are cut into chunks of chunkBytes, each read from the
// connection straight into a buffer the result then owns
// (tensor.WrapBytes) and shared into the result as soon as it is full, so
// the data is copied once, out of the socket, and never held twice.
type stagedTensor struct {
	name       string
	dtype      tensor.DType
	shape      []int
	size       int // bytes
	chunkBytes int
	ed         *tensor.Editor
	pend       []byte // the chunk being filled
	fill       int    // bytes in pend
	next       int    // next chunk index
	filled     int    // bytes received
	crc        uint32 // CRC-32 of the bytes received
}

// chunkLenFor is the chunk length (elements) a staged tensor of n
// elements is built with: the largest divisor of n whose chunk fits
// bulkFrameSize, or n itself (one chunk) when n is that small or has no
// divisor of a useful size.
func chunkLenFor(n, size int) int {
	target := bulkFrameSize / size
	if n <= target {
		return n
	}
	best := 1
	for i := 1; i*i <= n; i++ {
		if n%i != 0 {
			continue
		}
		if i <= target && i > best {
			best = i
		}
		if j := n / i; j <= target && j > best {
			best = j
		}
	}
	if best*size < 16<<10 {
		return n
	}
	return best
}

func newStagedTensor(name string, dt tensor.DType, shape []int) (*stagedTensor, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	st := &stagedTensor{name: name, dtype: dt, shape: shape, size: n * dt.Size()}
	if n == 0 {
		return st, nil
	}
	cl := chunkLenFor(n, dt.Size())
	t, err := tensor.NewChunked(dt, cl, shape...)
	if err != nil {
		return nil, err
	}
	st.chunkBytes, st.ed = cl*dt.Size(), t.Edit()
	return st, nil
}

// take reads n bytes of r into the tensor's next bytes.
func (t *stagedTensor) take(r io.Reader, n int) error {
	for n > 0 {
		if t.pend == nil {
			t.pend = make([]byte, t.chunkBytes)
		}
		buf := t.pend[t.fill:]
		buf = buf[:min(len(buf), n)]
		got, err := io.ReadFull(r, buf)
		t.crc = crc32.Update(t.crc, crcTable, buf[:got])
		t.fill += got
		t.filled += got
		n -= got
		if err != nil {
			return err
		}
		if t.fill == t.chunkBytes {
			x, err := tensor.WrapBytes(t.dtype, t.pend, t.chunkBytes/t.dtype.Size())
			if err == nil {
				err = t.ed.Share(t.next, x, 0, 1)
			}
			if err != nil {
				return fmt.Errorf("%w: tensor %s: %v", ErrBundle, t.name, err)
			}
			t.pend, t.fill = nil, 0
			t.next++
		}
	}
	return nil
}

// staging is the receiving side of one bulk transfer. mu is held while a
// connection writes into it; sealed is set by a successful commit, after
// which no connection writes.
type staging struct {
	mu      sync.Mutex
	tensors []*stagedTensor
	sealed  bool
	active  int           // connections streaming into it
	ended   int           // connections that stopped streaming into it
	changed chan struct{} // closed (and replaced) when a tensor completes or a connection stops
}

// notify wakes commits waiting for s; s.mu is held.
func (s *staging) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// full reports whether every tensor has all its bytes; s.mu is held.
func (s *staging) full() bool {
	for _, t := range s.tensors {
		if t.filled != t.size {
			return false
		}
	}
	return true
}

// verify reports a tensor whose bytes are missing or whose checksum
// differs from want; when all match it seals s and returns the tensors.
func (s *staging) verify(id string, want []uint32) ([]tensor.Tensor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(want) != len(s.tensors) {
		return nil, fmt.Errorf("%w: transfer %s: commit carries %d checksums for %d tensors", ErrBundle, id, len(want), len(s.tensors))
	}
	for i, t := range s.tensors {
		if t.filled != t.size {
			return nil, fmt.Errorf("%w: transfer %s: tensor %s has %d of its %d bytes", ErrBundle, id, t.name, t.filled, t.size)
		}
		if t.crc != want[i] {
			return nil, fmt.Errorf("%w: transfer %s: tensor %s has CRC-32 %08x, the sender's is %08x", ErrBundle, id, t.name, t.crc, want[i])
		}
	}
	out := make([]tensor.Tensor, len(s.tensors))
	for i, t := range s.tensors {
		if t.ed == nil {
			x, err := tensor.New(t.dtype, t.shape...)
			if err != nil {
				return nil, fmt.Errorf("%w: transfer %s: tensor %s: %v", ErrBundle, id, t.name, err)
			}
			out[i] = x
			continue
		}
		out[i] = t.ed.Tensor()
	}
	s.sealed = true
	return out, nil
}

// bulkServer is a node's side-channel listener and its staged transfers.
type bulkServer struct {
	ln      net.Listener
	addr    string // advertised host:port
	timeout time.Duration
	tls     *tls.Config // nil: plaintext
	mu      sync.Mutex
	staged  map[string]*staging
	wake    map[string]chan struct{} // closed when the transfer is staged
	wg      sync.WaitGroup
	conns   map[net.Conn]bool
	closed  bool
}

// startBulk listens on listen (TLS when cfg is non-nil) and advertises
// host with the listener's port.
func startBulk(listen, host string, cfg *tls.Config, timeout time.Duration) (*bulkServer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("%w: bulk listen %s: %v", ErrConfig, listen, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	s := &bulkServer{ln: ln, tls: cfg, addr: net.JoinHostPort(host, fmt.Sprint(port)), timeout: timeout,
		staged: map[string]*staging{}, wake: map[string]chan struct{}{}, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *bulkServer) accept() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		if s.tls != nil {
			conn = tls.Server(conn, s.tls)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conns[conn] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serve(conn)
			s.mu.Lock()
			delete(s.conns, conn)
			s.mu.Unlock()
			_ = conn.Close()
		}()
	}
}

func (s *bulkServer) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	_ = s.ln.Close()
	s.wg.Wait()
}

// stage registers a bulk transfer's tensors (a re-sent begin keeps the
// first registration).
func (s *bulkServer) stage(id string, begin []*messages.TransferTensor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.staged[id]; ok {
		return nil
	}
	st := &staging{changed: make(chan struct{})}
	for _, t := range begin {
		shape := make([]int, len(t.Shape))
		for i, d := range t.Shape {
			shape[i] = int(d)
		}
		x, err := newStagedTensor(t.Name, tensor.DType(t.Dtype), shape)
		if err != nil {
			return fmt.Errorf("%w: transfer %s: tensor %s: %v", ErrBundle, id, t.Name, err)
		}
		st.tensors = append(st.tensors, x)
	}
	s.staged[id] = st
	if ch, ok := s.wake[id]; ok {
		close(ch)
		delete(s.wake, id)
	}
	return nil
}

// lookup returns transfer id's staging, waiting up to the timeout for its
// begin: a sender that knows the side channel streams while its begin is
// on the way.
func (s *bulkServer) lookup(id string) *staging {
	s.mu.Lock()
	if st := s.staged[id]; st != nil {
		s.mu.Unlock()
		return st
	}
	ch, ok := s.wake[id]
	if !ok {
		ch = make(chan struct{})
		s.wake[id] = ch
	}
	s.mu.Unlock()
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.staged[id]; st != nil {
		return st
	}
	if s.wake[id] == ch {
		delete(s.wake, id)
	}
	return nil
}

// commit verifies a staged transfer against the sender's checksums and,
// when they match, unregisters it and returns its tensors. The commit may
// overtake the stream's last bytes: it waits (up to the timeout) until
// every tensor is full, and fails as soon as no connection is streaming
// into an incomplete transfer any more (a truncated stream).
func (s *bulkServer) commit(id string, crcs []uint32) ([]tensor.Tensor, error) {
	s.mu.Lock()
	st := s.staged[id]
	s.mu.Unlock()
	if st == nil {
		return nil, fmt.Errorf("%w: bulk commit of unstaged transfer %s", ErrBundle, id)
	}
	deadline := time.NewTimer(s.timeout)
	defer deadline.Stop()
wait:
	for {
		st.mu.Lock()
		if st.full() || (st.active == 0 && st.ended > 0) {
			st.mu.Unlock()
			break
		}
		ch := st.changed
		st.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			break wait
		}
	}
	out, err := st.verify(id, crcs)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	delete(s.staged, id)
	s.mu.Unlock()
	return out, nil
}

// serve reads one connection's sessions (frames and an end frame, then
// the answer) until the peer closes it.
func (s *bulkServer) serve(conn net.Conn) {
	r := bufio.NewReaderSize(conn, 64<<10)
	for s.session(conn, r) {
	}
}

// session serves one stream of frames; it reports whether the
// connection may carry another.
func (s *bulkServer) session(conn net.Conn, r *bufio.Reader) bool {
	seen := map[string]*staging{}
	defer func() {
		for _, st := range seen {
			st.mu.Lock()
			st.active--
			st.ended++
			st.notify()
			st.mu.Unlock()
		}
	}()
	err := func() error {
		for {
			_ = conn.SetReadDeadline(time.Now().Add(s.timeout))
			id, err := readString(r)
			if err != nil {
				return err
			}
			if id == "" {
				return nil
			}
			name, err := readString(r)
			if err != nil {
				return err
			}
			var hdr [16]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return err
			}
			off, n := binary.LittleEndian.Uint64(hdr[:8]), binary.LittleEndian.Uint64(hdr[8:])
			st := seen[id]
			if st == nil {
				if st = s.lookup(id); st == nil {
					return fmt.Errorf("%w: bulk frame for unknown transfer %s", ErrBundle, id)
				}
				seen[id] = st
				st.mu.Lock()
				st.active++
				st.mu.Unlock()
			}
			if err := st.receive(r, id, name, off, n); err != nil {
				return err
			}
		}
	}()
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne) {
		return false // truncated stream: nothing to answer, nothing complete
	}
	if err == nil {
		for id, st := range seen {
			if err = st.complete(id); err != nil {
				break
			}
		}
	}
	reply := []byte{0, 0, 0, 0, 0}
	if err != nil {
		msg := err.Error()
		reply = binary.LittleEndian.AppendUint32([]byte{1}, uint32(len(msg)))
		reply = append(reply, msg...)
	}
	_ = conn.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, werr := conn.Write(reply); werr != nil {
		return false
	}
	return err == nil // after a refusal the stream's framing is unknown
}

// receive reads one frame's data into tensor name.
func (st *staging) receive(r io.Reader, id, name string, off, n uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sealed {
		_, err := io.CopyN(io.Discard, r, int64(n))
		return err
	}
	for _, t := range st.tensors {
		if t.name != name {
			continue
		}
		size := uint64(t.size)
		if off > size || n > size-off {
			return fmt.Errorf("%w: transfer %s: bulk frame of %s at bytes [%d, %d) (tensor has %d bytes)", ErrBundle, id, name, off, off+n, size)
		}
		if off > uint64(t.filled) {
			return fmt.Errorf("%w: transfer %s: bulk frame of %s at byte %d skips bytes from %d", ErrBundle, id, name, off, t.filled)
		}
		// bytes already received (a re-sent stream) are skipped
		if dup := min(uint64(t.filled)-off, n); dup > 0 {
			if _, err := io.CopyN(io.Discard, r, int64(dup)); err != nil {
				return err
			}
			n -= dup
		}
		err := t.take(r, int(n))
		if t.filled == t.size && st.full() {
			st.notify()
		}
		return err
	}
	return fmt.Errorf("%w: transfer %s: bulk frame of unknown tensor %q", ErrBundle, id, name)
}

// complete reports a tensor of st whose bytes have not all arrived.
func (st *staging) complete(id string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, t := range st.tensors {
		if !st.sealed && t.filled != t.size {
			return fmt.Errorf("%w: transfer %s: stream ended with %d of the %d bytes of %s", ErrBundle, id, t.filled, t.size, t.name)
		}
	}
	return nil
}

func readString(r io.Reader) (string, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return "", err
	}
	b := make([]byte, binary.LittleEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendFrameHeader appends a data frame's header to h.
func appendFrameHeader(h []byte, id, name string, off, n int) []byte {
	h = appendString(h, id)
	h = appendString(h, name)
	h = binary.LittleEndian.AppendUint64(h, uint64(off))
	return binary.LittleEndian.AppendUint64(h, uint64(n))
}

// streamBulk writes b's bytes of transfer id on conn (a side channel),
// then the end frame, and returns each tensor's CRC-32; bulkReply reads
// the receiver's answer. An error is a failed connection, worth a retry
// on a new one (ErrBundle: b cannot be sent).
func streamBulk(ctx context.Context, conn net.Conn, timeout time.Duration, id string, b Bundle) ([]uint32, error) {
	if len(id) > 0xFFFF {
		return nil, fmt.Errorf("%w: transfer id of %d bytes", ErrBundle, len(id))
	}
	for _, name := range b.Names {
		if len(name) > 0xFFFF {
			return nil, fmt.Errorf("%w: tensor name of %d bytes", ErrBundle, len(name))
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()
	// Frames are written straight from the tensors' chunks (no copy),
	// each piece checksummed just before it goes out.
	crcs := make([]uint32, len(b.Tensors))
	var hdr []byte
	for i, t := range b.Tensors {
		off := 0
		err := t.VisitBytes(0, t.Len(), func(piece []byte) error {
			for len(piece) > 0 {
				n := min(len(piece), bulkFrameSize)
				crcs[i] = crc32.Update(crcs[i], crcTable, piece[:n])
				hdr = appendFrameHeader(hdr[:0], id, b.Names[i], off, n)
				_ = conn.SetWriteDeadline(time.Now().Add(timeout))
				if _, err := (&net.Buffers{hdr, piece[:n]}).WriteTo(conn); err != nil {
					return err
				}
				off += n
				piece = piece[n:]
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if _, err := conn.Write([]byte{0, 0}); err != nil {
		return nil, err
	}
	return crcs, nil
}

// bulkReply reads the receiver's answer to a stream's end frame: nil when
// it has every byte, an error wrapping ErrRejected when it refused the
// stream (conn is then unusable), another error when conn failed.
func bulkReply(conn net.Conn, timeout time.Duration, id string) error {
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	var hdr [5]byte
	if _, err := io.ReadFull(conn, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 0 {
		msg := make([]byte, min(binary.LittleEndian.Uint32(hdr[1:]), 1<<16))
		_, _ = io.ReadFull(conn, msg)
		return fmt.Errorf("%w: bulk stream of %s: %s", ErrRejected, id, msg)
	}
	_ = conn.SetDeadline(time.Time{})
	return nil
}

// bulkClient is a node's sending side of side channels: the side channel
// address each peer announced, and an idle connection per side channel.
type bulkClient struct {
	tls     *tls.Config
	timeout time.Duration
	mu      sync.Mutex
	addrs   map[string]string // peer's actor address -> its side channel
	idle    map[string]idleConn
}

type idleConn struct {
	conn net.Conn
	at   time.Time
}

// get returns an idle connection to bulk (one the server has not yet
// timed out), or dials one.
func (c *bulkClient) get(ctx context.Context, bulk string) (net.Conn, error) {
	c.mu.Lock()
	ic, ok := c.idle[bulk]
	delete(c.idle, bulk)
	c.mu.Unlock()
	if ok {
		if time.Since(ic.at) < c.timeout/2 {
			return ic.conn, nil
		}
		_ = ic.conn.Close()
	}
	d := &net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, "tcp", bulk)
	if err != nil || c.tls == nil {
		return conn, err
	}
	cfg := c.tls.Clone()
	cfg.ServerName, _, _ = net.SplitHostPort(bulk)
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return tc, nil
}

// put keeps conn for the next stream to bulk.
func (c *bulkClient) put(bulk string, conn net.Conn) {
	c.mu.Lock()
	old, ok := c.idle[bulk]
	c.idle[bulk] = idleConn{conn: conn, at: time.Now()}
	c.mu.Unlock()
	if ok {
		_ = old.conn.Close()
	}
}

func (c *bulkClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ic := range c.idle {
		_ = ic.conn.Close()
		delete(c.idle, k)
	}
}
