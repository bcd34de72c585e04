package transfer

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/messages"
)

// incoming is a transfer being reassembled.
type incoming struct {
	begin *messages.TransferBegin
	data  [][]byte          // per tensor, its bytes
	got   []map[uint32]bool // per tensor, the chunks received
	left  int               // chunks still missing
	// committing is set once the handler runs; waiters are the commits
	// that arrived meanwhile (re-sent ones), done the handler's outcome.
	committing bool
	waiters    []*actor.PID
	done       *messages.Status
}

// handlerDone is the receiver's note to itself that a handler returned.
type handlerDone struct {
	id     string
	status *messages.Status
}

// receiver reassembles transfers. Each request is idempotent: a chunk that
// arrives twice is acked twice and stored once, a repeated begin is acked,
// and a repeated commit gets the first commit's outcome. The handler runs
// outside the actor (it may block on a runtime), and reports back with a
// handlerDone.
type receiver struct {
	handler   func(ctx context.Context, b Bundle) error
	transfers map[string]*incoming
	bulk      *bulkServer // the node's side channel
}

func ack(id, name string, index uint32, err error) *messages.TransferAck {
	s := &messages.Status{Code: messages.Code_CODE_OK}
	if err != nil {
		s = &messages.Status{Code: messages.Code_CODE_INVALID_ARGUMENT, Message: err.Error()}
	}
	return &messages.TransferAck{Status: s, TransferId: id, Name: name, Index: index}
}

func (r *receiver) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *messages.TransferBegin:
		a := ack(m.TransferId, "", 0, r.begin(m))
		if m.Bulk && r.bulk != nil {
			a.BulkAddress = r.bulk.addr
		}
		c.Respond(a)
	case *messages.TensorChunk:
		c.Respond(ack(m.TransferId, m.Name, m.Index, r.chunk(m)))
	case *messages.TransferCommit:
		r.commit(c, m)
	case *handlerDone:
		in := r.transfers[m.id]
		in.done = m.status
		for _, w := range in.waiters {
			c.Send(w, &messages.TransferAck{Status: m.status, TransferId: m.id})
		}
		in.waiters, in.data, in.got, in.begin = nil, nil, nil, nil // only the outcome is kept
	}
}

func (r *receiver) begin(m *messages.TransferBegin) error {
	if _, ok := r.transfers[m.TransferId]; ok {
		return nil // a re-sent begin
	}
	in := &incoming{begin: m}
	for _, t := range m.Tensors {
		shape := make([]int, len(t.Shape))
		n := 1
		for i, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("%w: transfer %s: tensor %s has negative dim %d", ErrBundle, m.TransferId, t.Name, d)
			}
			shape[i] = int(d)
			n *= int(d)
		}
		dt := tensor.DType(t.Dtype)
		if !dt.Valid() {
			return fmt.Errorf("%w: transfer %s: tensor %s has dtype %v", ErrBundle, m.TransferId, t.Name, t.Dtype)
		}
		if !m.Bulk {
			in.data = append(in.data, make([]byte, n*dt.Size()))
		}
		in.got = append(in.got, map[uint32]bool{})
		in.left += int(t.Chunks)
	}
	if m.Bulk {
		if r.bulk == nil {
			return fmt.Errorf("%w: transfer %s: this node has no side channel", ErrBundle, m.TransferId)
		}
		if err := r.bulk.stage(m.TransferId, m.Tensors); err != nil {
			return err
		}
	}
	r.transfers[m.TransferId] = in
	return nil
}

func (r *receiver) chunk(m *messages.TensorChunk) error {
	in, ok := r.transfers[m.TransferId]
	if !ok {
		return fmt.Errorf("%w: chunk %d of %s for unknown transfer %s", ErrBundle, m.Index, m.Name, m.TransferId)
	}
	if in.committing {
		return nil // a late re-send of a chunk already stored
	}
	for i, t := range in.begin.Tensors {
		if t.Name != m.Name {
			continue
		}
		if m.Index >= t.Chunks {
			return fmt.Errorf("%w: transfer %s: chunk %d of %s (tensor has %d chunks)", ErrBundle, m.TransferId, m.Index, m.Name, t.Chunks)
		}
		if m.Offset+uint64(len(m.Data)) > uint64(len(in.data[i])) {
			return fmt.Errorf("%w: transfer %s: chunk %d of %s at bytes [%d, %d) (tensor has %d bytes)", ErrBundle, m.TransferId, m.Index, m.Name, m.Offset, m.Offset+uint64(len(m.Data)), len(in.data[i]))
		}
		if !in.got[i][m.Index] {
			copy(in.data[i][m.Offset:], m.Data)
			in.got[i][m.Index] = true
			in.left--
		}
		return nil
	}
	return fmt.Errorf("%w: transfer %s: chunk of unknown tensor %q", ErrBundle, m.TransferId, m.Name)
}

func (r *receiver) commit(c actor.Context, m *messages.TransferCommit) {
	in, ok := r.transfers[m.TransferId]
	switch {
	case !ok:
		c.Respond(ack(m.TransferId, "", 0, fmt.Errorf("%w: commit of unknown transfer %s", ErrBundle, m.TransferId)))
		return
	case in.done != nil:
		c.Respond(&messages.TransferAck{Status: in.done, TransferId: m.TransferId})
		return
	case in.committing:
		in.waiters = append(in.waiters, c.Sender())
		return
	case in.left != 0:
		c.Respond(ack(m.TransferId, "", 0, fmt.Errorf("%w: commit of transfer %s with %d chunks missing", ErrBundle, m.TransferId, in.left)))
		return
	}
	b := Bundle{Metadata: in.begin.Metadata}
	if in.begin.Bulk {
		r.commitBulk(c, m, in, b)
		return
	}
	for i, t := range in.begin.Tensors {
		shape := make([]int, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int(d)
		}
		x, err := tensor.FromBytes(tensor.DType(t.Dtype), in.data[i], shape...)
		if err != nil {
			c.Respond(ack(m.TransferId, "", 0, fmt.Errorf("%w: transfer %s: tensor %s: %v", ErrBundle, m.TransferId, t.Name, err)))
			return
		}
		b.Names = append(b.Names, t.Name)
		b.Tensors = append(b.Tensors, x)
	}
	in.committing = true
	in.waiters = []*actor.PID{c.Sender()}
	self, sys, handler, id := c.Self(), c.ActorSystem(), r.handler, m.TransferId
	go func() {
		var err error
		if handler != nil {
			err = handler(context.Background(), b)
		}
		st := &messages.Status{Code: messages.Code_CODE_OK}
		if err != nil {
			st = &messages.Status{Code: messages.Code_CODE_INVALID_ARGUMENT, Message: err.Error()}
		}
		sys.Root.Send(self, &handlerDone{id: id, status: st})
	}()
}

// commitBulk commits a bulk transfer outside the actor: it waits for the
// side channel to have every tensor's bytes (the commit may overtake the
// stream), verifies sizes and checksums, and only then runs the handler.
// A failed verification is the transfer's outcome (nothing is applied;
// re-sent commits get the same error).
func (r *receiver) commitBulk(c actor.Context, m *messages.TransferCommit, in *incoming, b Bundle) {
	in.committing = true
	in.waiters = []*actor.PID{c.Sender()}
	self, sys, handler, id, bulk, crcs, tensors := c.Self(), c.ActorSystem(), r.handler, m.TransferId, r.bulk, m.Crc32, in.begin.Tensors
	go func() {
		ts, err := bulk.commit(id, crcs)
		if err == nil {
			for i, t := range tensors {
				b.Names = append(b.Names, t.Name)
				b.Tensors = append(b.Tensors, ts[i])
			}
			if handler != nil {
				err = handler(context.Background(), b)
			}
		}
		st := &messages.Status{Code: messages.Code_CODE_OK}
		if err != nil {
			st = &messages.Status{Code: messages.Code_CODE_INVALID_ARGUMENT, Message: err.Error()}
		}
		sys.Root.Send(self, &handlerDone{id: id, status: st})
	}()
}
