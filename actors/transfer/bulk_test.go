//go:build !race

package transfer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// chunkedTensor is x stored in chunks of chunkLen elements (the sender
// reads across chunk boundaries).
func chunkedTensor(t *testing.T, x tensor.Tensor, chunkLen int) tensor.Tensor {
	t.Helper()
	y, err := tensor.NewChunked(x.DType(), chunkLen, x.Shape()...)
	require.NoError(t, err)
	ed := y.Edit()
	require.NoError(t, ed.Write(0, x, 0, x.Len()))
	return ed.Tensor()
}

// Bundles of several tensors, of sizes below, at and above the frame
// size, of element counts with and without a useful divisor, empty, and
// stored in chunks, arrive over the side channel byte for byte, in order,
// with their dtypes, shapes and metadata; the chunked path delivers the
// same bytes.
func TestBulkTransferByteIdentical(t *testing.T) {
	r := mrand.New(mrand.NewPCG(5, 6))
	big := randomTensor(r, tensor.BFloat16, 3*bulkFrameSize/2+8, 1) // 3 frames' worth of bytes
	cases := map[string]Bundle{
		"one small tensor": {Names: []string{"x"}, Tensors: []tensor.Tensor{randomTensor(r, tensor.Float32, 3, 5)}},
		"several tensors and an empty one": {Names: []string{"k", "v", "empty", "s"}, Tensors: []tensor.Tensor{
			randomTensor(r, tensor.BFloat16, 40, 2, 8), randomTensor(r, tensor.BFloat16, 40, 2, 8),
			tensor.Must(tensor.New(tensor.Float32, 0, 4)), randomTensor(r, tensor.Float16, 7)},
			Metadata: map[string]string{MetaLength: "40", "note": "bulk"}},
		"larger than a frame":             {Names: []string{"big"}, Tensors: []tensor.Tensor{big}},
		"prime element count over frames": {Names: []string{"p"}, Tensors: []tensor.Tensor{randomTensor(r, tensor.Float32, 262147)}},
		"chunked source":                  {Names: []string{"c"}, Tensors: []tensor.Tensor{chunkedTensor(t, randomTensor(r, tensor.Float32, 96, 1000), 3000)}},
	}
	for name, bundle := range cases {
		t.Run(name, func(t *testing.T) {
			got := make(chan Bundle, 2)
			dst := newNode(t, Config{Handler: func(_ context.Context, b Bundle) error { got <- b; return nil }})
			for _, chunked := range []bool{false, true} {
				src := newNode(t, Config{Chunked: chunked})
				require.NoError(t, src.Send(context.Background(), dst.Address(), bundle))
				b := <-got
				require.Equal(t, bundle.Names, b.Names, "chunked=%v", chunked)
				for i, x := range bundle.Tensors {
					y := b.Tensors[i]
					assert.Equal(t, x.DType(), y.DType())
					assert.Equal(t, x.Shape(), y.Shape())
					assert.True(t, bytes.Equal(x.Bytes(), y.Bytes()), "tensor %s, chunked=%v: bytes differ", bundle.Names[i], chunked)
				}
				for k, v := range bundle.Metadata {
					assert.Equal(t, v, b.Metadata[k])
				}
			}
		})
	}
}

// bulkBegin announces a bulk transfer of x (as tensor "x") to dst by hand
// and returns dst's side channel and x's bytes.
func bulkBegin(t *testing.T, src, dst *Node, id string, x tensor.Tensor) (string, []byte) {
	t.Helper()
	ack, err := src.request(context.Background(), dst.Address(), &messages.TransferBegin{TransferId: id, Bulk: true,
		Tensors: []*messages.TransferTensor{{Name: "x", Dtype: messages.DType(x.DType()), Shape: int64s(x.Shape())}}}, "begin")
	require.NoError(t, err)
	require.Equal(t, dst.BulkAddress(), ack.GetBulkAddress())
	return ack.GetBulkAddress(), x.Bytes()
}

// A stream cut short (mid-frame, or ended before the last frame) or
// carrying a corrupted byte makes the commit fail, naming the shortfall
// or the checksum, and the handler never runs: nothing partial is
// applied.
func TestBulkTruncatedOrCorruptStream(t *testing.T) {
	x := randomTensor(mrand.New(mrand.NewPCG(7, 8)), tensor.Float32, 3*bulkFrameSize/4/4*2) // 1.5 frames
	for _, tc := range []struct {
		name  string
		write func(conn net.Conn, id string, data []byte)
		reply bool // the receiver answers the end frame (with an error)
		want  string
	}{
		{"connection closed mid-frame", func(conn net.Conn, id string, data []byte) {
			_, _ = conn.Write(appendFrameHeader(nil, id, "x", 0, len(data)))
			_, _ = conn.Write(data[:len(data)/3])
		}, false, "bytes"},
		{"end frame before the last frame", func(conn net.Conn, id string, data []byte) {
			_, _ = conn.Write(appendFrameHeader(nil, id, "x", 0, bulkFrameSize))
			_, _ = conn.Write(data[:bulkFrameSize])
			_, _ = conn.Write([]byte{0, 0})
		}, true, "bytes"},
		{"corrupted byte", func(conn net.Conn, id string, data []byte) {
			bad := append([]byte(nil), data...)
			bad[len(bad)/2] ^= 0x40
			_, _ = conn.Write(appendFrameHeader(nil, id, "x", 0, len(bad)))
			_, _ = conn.Write(bad)
			_, _ = conn.Write([]byte{0, 0})
		}, false, "CRC-32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var handled atomic.Int32
			dst := newNode(t, Config{AckTimeout: 2 * time.Second, Handler: func(context.Context, Bundle) error { handled.Add(1); return nil }})
			src := newNode(t, Config{AckTimeout: 2 * time.Second})
			id := "truncated/" + tc.name
			addr, data := bulkBegin(t, src, dst, id, x)
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			tc.write(conn, id, data)
			if tc.reply {
				hdr := make([]byte, 5)
				_, err := io.ReadFull(conn, hdr)
				require.NoError(t, err)
				assert.Equal(t, byte(1), hdr[0], "the receiver refuses a short stream at its end frame")
			}
			if tc.name == "corrupted byte" {
				hdr := make([]byte, 5)
				_, err := io.ReadFull(conn, hdr)
				require.NoError(t, err)
				assert.Equal(t, byte(0), hdr[0], "sizes match; the checksum is the commit's to check")
			}
			require.NoError(t, conn.Close())

			_, err = src.request(context.Background(), dst.Address(), &messages.TransferCommit{TransferId: id,
				Crc32: []uint32{crc32.ChecksumIEEE(data)}}, "commit")
			require.ErrorIs(t, err, ErrRejected)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, int32(0), handled.Load())
		})
	}
}

// With mutual TLS the side channel refuses a plaintext peer, a TLS peer
// without a certificate and one whose certificate another CA signed;
// peers with the cluster's certificates transfer over it.
func TestBulkMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, dir, "cluster")
	rogue := newPKI(t, dir, "rogue")
	var handled atomic.Int32
	b := newNode(t, Config{TLS: ca.issue(t, "b"), Handler: func(context.Context, Bundle) error { handled.Add(1); return nil }})
	x := randomTensor(mrand.New(mrand.NewPCG(9, 10)), tensor.Float32, 64, 64)
	good := newNode(t, Config{TLS: ca.issue(t, "a")})
	require.NoError(t, good.Send(context.Background(), b.Address(), Bundle{Names: []string{"x"}, Tensors: []tensor.Tensor{x}}))
	require.Equal(t, int32(1), handled.Load())

	roots := x509.NewCertPool()
	roots.AddCert(ca.caCert)
	rogueFiles := rogue.issue(t, "r")
	rogueCert, err := tls.LoadX509KeyPair(rogueFiles.CertFile, rogueFiles.KeyFile)
	require.NoError(t, err)
	for name, cfg := range map[string]*tls.Config{
		"plaintext":                 nil,
		"TLS without a certificate": {RootCAs: roots, ServerName: "127.0.0.1"},
		"certificate of another CA": {RootCAs: roots, ServerName: "127.0.0.1", Certificates: []tls.Certificate{rogueCert}},
	} {
		t.Run(name, func(t *testing.T) {
			var conn net.Conn
			var err error
			if cfg == nil {
				conn, err = net.Dial("tcp", b.BulkAddress())
			} else {
				conn, err = tls.Dial("tcp", b.BulkAddress(), cfg)
			}
			if err == nil {
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Write(append(appendFrameHeader(nil, "t", "x", 0, 4), 1, 2, 3, 4, 0, 0))
				if err == nil {
					// the refusal shows on the first read (TLS 1.3 and plaintext alike)
					_, err = io.ReadFull(conn, make([]byte, 5))
				}
				_ = conn.Close()
			}
			require.Error(t, err)
			if cfg != nil {
				assert.Contains(t, err.Error(), "certificate")
			}
			assert.Equal(t, int32(1), handled.Load())
		})
	}
}

// BulkAddress is on the node's advertised host, and Config.BulkListen
// picks the side channel's port.
func TestBulkListen(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	n := newNode(t, Config{BulkListen: fmt.Sprintf("127.0.0.1:%d", port)})
	assert.Equal(t, fmt.Sprintf("127.0.0.1:%d", port), n.BulkAddress())
	require.ErrorIs(t, Config{Listen: "127.0.0.1:0", BulkListen: "nohost"}.Validate(), ErrConfig)
}
