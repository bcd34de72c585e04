package transfer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// fuzzConn is a connection that reads a fixed byte stream and records
// what is written back.
type fuzzConn struct {
	net.Conn // nil: the methods below are all a session uses
	r        *bytes.Reader
	w        bytes.Buffer
}

func (c *fuzzConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fuzzConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fuzzConn) SetDeadline(time.Time) error      { return nil }
func (c *fuzzConn) Close() error                     { return nil }
func (c *fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fuzzConn) String() string                   { return "fuzz" }

// The transfer every fuzzed stream targets: two tensors of 24 and 8 bytes.
var fuzzTensors = []*messages.TransferTensor{
	{Name: "k", Dtype: messages.DType(tensor.Float32), Shape: []int64{2, 3}},
	{Name: "v", Dtype: messages.DType(tensor.BFloat16), Shape: []int64{4}},
}

// bulkModel is a naive reading of the side channel's framing: frames of
// (id, name, offset, length, data) up to an empty id, then an answer (a
// refusal when a transfer the session streamed into is incomplete); a
// frame may repeat bytes already received but not skip any.
type bulkModel struct {
	names   []string
	content [][]byte
	filled  []int
	replies []bool // per answered session: ok
}

func newBulkModel() *bulkModel {
	m := &bulkModel{}
	for _, t := range fuzzTensors {
		n := int(tensor.DType(t.Dtype).Size())
		for _, d := range t.Shape {
			n *= int(d)
		}
		m.names = append(m.names, t.Name)
		m.content = append(m.content, make([]byte, n))
		m.filled = append(m.filled, 0)
	}
	return m
}

// run consumes the stream the way the server must.
func (m *bulkModel) run(in []byte) {
	r := bytes.NewReader(in)
	str := func() (string, bool) {
		var l [2]byte
		if r.Len() < 2 {
			return "", false
		}
		_, _ = r.Read(l[:])
		n := int(binary.LittleEndian.Uint16(l[:]))
		if r.Len() < n {
			return "", false
		}
		b := make([]byte, n)
		_, _ = r.Read(b)
		return string(b), true
	}
	for { // sessions
		seen := false // the session streamed into the transfer
		for {         // frames
			id, ok := str()
			if !ok {
				return
			}
			if id == "" {
				break
			}
			name, ok := str()
			if !ok || r.Len() < 16 {
				return
			}
			var hdr [16]byte
			_, _ = r.Read(hdr[:])
			off, n := binary.LittleEndian.Uint64(hdr[:8]), binary.LittleEndian.Uint64(hdr[8:])
			if id != "t" {
				m.replies = append(m.replies, false)
				return
			}
			i := -1
			for j, nm := range m.names {
				if nm == name {
					i = j
					break
				}
			}
			seen = true
			if i < 0 {
				m.replies = append(m.replies, false)
				return
			}
			size := uint64(len(m.content[i]))
			if off > size || n > size-off || off > uint64(m.filled[i]) {
				m.replies = append(m.replies, false)
				return
			}
			dup := min(uint64(m.filled[i])-off, n)
			if uint64(r.Len()) < dup {
				return
			}
			_, _ = r.Seek(int64(dup), 1)
			got, _ := r.Read(m.content[i][m.filled[i] : m.filled[i]+int(n-dup)])
			m.filled[i] += got
			if got < int(n-dup) {
				return // truncated: no answer
			}
		}
		for i := range m.filled {
			if seen && m.filled[i] != len(m.content[i]) {
				m.replies = append(m.replies, false)
				return
			}
		}
		m.replies = append(m.replies, true)
	}
}

// FuzzBulkSession feeds arbitrary byte streams to the side channel's
// receiving end and checks it against bulkModel: the same bytes staged,
// the same answers, never a panic; a transfer the model completes
// commits with the model's bytes.
func FuzzBulkSession(f *testing.F) {
	k := bytes.Repeat([]byte{1, 2, 3}, 8)
	v := []byte{9, 8, 7, 6, 5, 4, 3, 2}
	frame := func(id, name string, off int, data []byte) []byte {
		return append(appendFrameHeader(nil, id, name, off, len(data)), data...)
	}
	end := []byte{0, 0}
	whole := append(append(frame("t", "k", 0, k), frame("t", "v", 0, v)...), end...)
	f.Add(whole)
	f.Add(whole[:len(whole)-5])
	f.Add(append(append(frame("t", "k", 0, k[:10]), frame("t", "k", 4, k[4:])...), append(frame("t", "v", 0, v), end...)...))
	f.Add(append(frame("t", "k", 3, k[3:]), end...))
	f.Add(append(frame("t", "x", 0, k), end...))
	f.Add(append(frame("t", "k", 0, k), end...))
	f.Add(append(append([]byte{}, whole...), end...))
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &bulkServer{timeout: time.Millisecond, staged: map[string]*staging{}, wake: map[string]chan struct{}{}}
		require.NoError(t, s.stage("t", fuzzTensors))
		conn := &fuzzConn{r: bytes.NewReader(in)}
		r := bufio.NewReader(conn)
		for s.session(conn, r) {
		}
		m := newBulkModel()
		m.run(in)

		// The answers: 5 bytes for OK, or 1, a length and a message.
		var answers []bool
		out := conn.w.Bytes()
		for len(out) > 0 {
			require.GreaterOrEqual(t, len(out), 5, "a short answer")
			n := int(binary.LittleEndian.Uint32(out[1:5]))
			require.Equal(t, out[0] == 0, n == 0, "an answer's status and message disagree")
			require.GreaterOrEqual(t, len(out)-5, n)
			answers = append(answers, out[0] == 0)
			out = out[5+n:]
		}
		require.Equal(t, m.replies, answers, "the answers")

		st := s.staged["t"]
		crcs := make([]uint32, len(st.tensors))
		full := true
		for i, x := range st.tensors {
			require.Equal(t, m.filled[i], x.filled, "bytes of %s", x.name)
			require.Equal(t, crc32.Checksum(m.content[i][:m.filled[i]], crcTable), x.crc, "checksum of %s", x.name)
			crcs[i] = x.crc
			full = full && m.filled[i] == len(m.content[i])
		}
		got, err := s.commit("t", crcs)
		if !full {
			require.ErrorIs(t, err, ErrBundle)
			return
		}
		require.NoError(t, err)
		for i, x := range got {
			require.True(t, bytes.Equal(m.content[i], x.Bytes()), "committed bytes of %s", m.names[i])
		}
	})
}
