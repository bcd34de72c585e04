package pagemanager

import (
	"fmt"
	"slices"
)

// Event is a KV event: a change to the set of cached page keys, in the
// schema of vLLM's KV events (vllm/distributed/kv_events.py) so that
// external indexers (KV-aware routers) can follow a pool. Each event has a
// sequence number, one more than the previous event's, starting at 1.
//
// A subscriber that adds the Hashes of every BlockStored to a set, removes
// those of every BlockRemoved and empties the set on AllBlocksCleared holds
// exactly the keys the pool can hit.
type Event interface {
	// EventSeq returns the event's sequence number.
	EventSeq() uint64
	withSeq(uint64) Event
}

// BlockStored reports pages registered in the prefix cache by one step of
// one sequence: consecutive full pages, chained from Parent.
//
// Like vLLM, a page whose key was already cached (a recomputed duplicate)
// is reported again: stored keys are a set, adding one twice is harmless.
type BlockStored struct {
	// Seq is the event's sequence number.
	Seq uint64
	// Hashes are the pages' keys, in order.
	Hashes []Key
	// Parent is the key before the first page (RootKey for a sequence's
	// first page).
	Parent Key
	// TokenIDs are the pages' tokens, PageSize per page.
	TokenIDs []int32
	// PageSize is the number of tokens per page.
	PageSize int
	// ExtraKeys are the sequence's extra keys (adapter name, cache salt,
	// ...), mixed into every hash.
	ExtraKeys []string
}

// BlockRemoved reports keys that left the prefix cache during one
// operation: the last page carrying each was evicted.
//
// Deviation from vLLM, which reports every evicted page: a key is reported
// only when no page carries it any more, so that a subscriber's set of keys
// stays exact when duplicates exist.
type BlockRemoved struct {
	// Seq is the event's sequence number.
	Seq uint64
	// Hashes are the keys that left the cache, in eviction order.
	Hashes []Key
}

// AllBlocksCleared reports that every key was dropped (ResetPrefixCache).
type AllBlocksCleared struct {
	// Seq is the event's sequence number.
	Seq uint64
}

// EventSeq returns the event's sequence number.
func (e BlockStored) EventSeq() uint64 { return e.Seq }

// EventSeq returns the event's sequence number.
func (e BlockRemoved) EventSeq() uint64 { return e.Seq }

// EventSeq returns the event's sequence number.
func (e AllBlocksCleared) EventSeq() uint64 { return e.Seq }

func (e BlockStored) withSeq(n uint64) Event      { e.Seq = n; return e }
func (e BlockRemoved) withSeq(n uint64) Event     { e.Seq = n; return e }
func (e AllBlocksCleared) withSeq(n uint64) Event { e.Seq = n; return e }

// TakeEvents returns the events accumulated since the last call, oldest
// first, and forgets them. The caller owns the returned slice (the
// events' ExtraKeys are the sequences' Request.Extra: read only). It
// returns nil when the pool was configured without Events. A pool with
// Events keeps every event until taken: its owner must drain them, e.g.
// once per scheduler step, as vLLM's take_events is.
func (p *Pool) TakeEvents() []Event {
	ev := p.events
	p.events = nil
	return ev
}

// emit numbers e and queues it, if events are on.
func (p *Pool) emit(e Event) {
	if !p.cfg.Events {
		return
	}
	p.eventSeq++
	p.events = append(p.events, e.withSeq(p.eventSeq))
}

// keyGone records that key k left the table: its checkpoint is dropped and
// it goes into the operation's BlockRemoved event.
func (p *Pool) keyGone(k Key) {
	if c, ok := p.ckpts[k]; ok {
		delete(p.ckpts, k)
		p.dropped = append(p.dropped, c)
	}
	if p.cfg.Events {
		p.removed = append(p.removed, k)
	}
}

// flushRemoved emits one BlockRemoved for the keys that left the table
// since the last flush, if any.
func (p *Pool) flushRemoved() {
	if len(p.removed) > 0 { // inlined: the common case costs a compare
		p.emitRemoved()
	}
}

func (p *Pool) emitRemoved() {
	p.emit(BlockRemoved{Hashes: slices.Clone(p.removed)})
	p.removed = p.removed[:0]
}

// Subscriber follows a stream of KV events and detects gaps (events lost
// on the way, e.g. by a lossy transport or a late join) and events that
// come again or out of order. After a gap it resynchronises on the event
// it got; the consumer should then rebuild its view of the pool.
type Subscriber struct {
	next   uint64 // the sequence number expected next; 0: any
	missed uint64
}

// NewSubscriber returns a subscriber that expects sequence number next
// first: 1 to follow a pool from its start, 0 to accept whatever comes
// first (a late join).
func NewSubscriber(next uint64) *Subscriber { return &Subscriber{next: next} }

// Observe checks the next event of the stream. An event after a gap is an
// error wrapping ErrEventGap that names the missing numbers, and is
// accepted (the subscriber expects its successor next); an event numbered
// below the expected one is an error wrapping ErrEventOrder and is
// ignored.
func (s *Subscriber) Observe(e Event) error {
	n := e.EventSeq()
	switch {
	case s.next == 0 || n == s.next:
		s.next = n + 1
		return nil
	case n < s.next:
		return fmt.Errorf("%w: got event %d, expected %d", ErrEventOrder, n, s.next)
	}
	from := s.next
	s.missed += n - from
	s.next = n + 1
	if n-from == 1 {
		return fmt.Errorf("%w: event %d missed (got %d)", ErrEventGap, from, n)
	}
	return fmt.Errorf("%w: events %d..%d missed (got %d)", ErrEventGap, from, n-1, n)
}

// Missed returns the number of events lost in gaps so far.
func (s *Subscriber) Missed() uint64 { return s.missed }

// Next returns the sequence number the subscriber expects next (0 before
// the first event of a late join).
func (s *Subscriber) Next() uint64 { return s.next }
