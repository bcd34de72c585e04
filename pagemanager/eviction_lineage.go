package pagemanager

import (
	"errors"
	"fmt"
	"math"
)

// Parameters of EvictLineage. They are priors and horizons, chosen on
// generated chat traces (kvmesh sim --generate), not on the reference
// trace; the rates themselves are learned by the pool as it runs.
const (
	// LineageClasses is the number of turn classes EvictLineage learns a
	// continuation rate for; turns beyond the last class share it.
	LineageClasses = 12
	// lineageContinuePrior and lineageContinueWeight: before any
	// observation a turn continues with probability 0.8, worth 2
	// observations.
	lineageContinuePrior  = 0.8
	lineageContinueWeight = 2.0
	// lineageGapPrior and lineageGapWeight: before any observation the
	// next turn of a live conversation comes after 16 Adds on average,
	// worth 50 observations.
	lineageGapPrior  = 16.0
	lineageGapWeight = 50.0
	// lineageExpiry: a sequence not continued within this many mean gaps
	// counts as a conversation's last turn (until it is continued after
	// all, which undoes the count).
	lineageExpiry = 8.0
)

// lineageRecord is what EvictLineage remembers of a freed sequence, under
// the key of its last full page: its turn class and when it was freed.
type lineageRecord struct {
	turn    int8
	expired bool // counted as a last turn
	at      int64
}

// lineageRef is a record in freeing order: its key and free time (to tell
// it from a later record under the same key).
type lineageRef struct {
	key Key
	at  int64
}

// Queues of lineageEvictor: keyless pages, shared pages, then one per turn
// class.
const (
	lqEmpty = iota
	lqShared
	lqTurn0
	lineageQueues = lqTurn0 + LineageClasses
)

// lineageEvictor is EvictLineage.
type lineageEvictor struct {
	q pageQueues

	hashed   []bool // the pool's
	keys     []Key  // the pool's
	cls      []int8 // turn class of the last sequence that held the page
	relAt    []int64
	shared   []bool
	hitCount []int32
	since    []int64
	child    []Key
	hasChild []bool

	clock int64 // Adds so far

	// The Add in progress: between tick and added.
	adding   bool
	match    bool // a prompt key is the last key of a recorded sequence
	matchKey Key
	matchRec lineageRecord

	records  map[Key]lineageRecord
	order    []lineageRef // records in freeing order, from head
	head     int          // order[head:] may be in records
	expireAt int          // order[head:expireAt] were expired
	maxRecs  int          // records kept: 4 per page, plus 1024

	cont, ended [LineageClasses]int64    // turns continued / not continued
	known       *[LineageClasses]float64 // tests: q(t) given, not learned
	gapSum      int64                    // Adds between a turn and the next, summed
	gaps        int64
}

func newLineageEvictor(hashed []bool, keys []Key) *lineageEvictor {
	n := len(hashed)
	return &lineageEvictor{
		q:      newPageQueues(n, lineageQueues),
		hashed: hashed, keys: keys,
		cls: make([]int8, n), relAt: make([]int64, n), shared: make([]bool, n),
		hitCount: make([]int32, n), since: make([]int64, n), child: make([]Key, n), hasChild: make([]bool, n),
		records: make(map[Key]lineageRecord), maxRecs: 4*n + 1024,
	}
}

// rate returns the learned probability that a live conversation's next
// turn comes at a given Add: the inverse of the mean gap.
func (e *lineageEvictor) rate() float64 {
	return (float64(e.gaps) + lineageGapWeight) / (float64(e.gapSum) + lineageGapWeight*lineageGapPrior)
}

// continues returns the learned probability that turn class t has a next
// turn.
func (e *lineageEvictor) continues(t int) float64 {
	if e.known != nil {
		return e.known[t]
	}
	c, n := float64(e.cont[t]), float64(e.cont[t]+e.ended[t])
	return (c + lineageContinuePrior*lineageContinueWeight) / (n + lineageContinueWeight)
}

// score returns the expected hits per Add of private free page pg: the
// probability that its conversation is alive, given its turn class and
// the Adds since it was freed without a next turn, times rate.
func (e *lineageEvictor) score(pg int32, h float64) float64 {
	q := e.continues(int(e.cls[pg]))
	a := q * math.Pow(1-h, float64(e.clock-e.relAt[pg]))
	return a / (a + 1 - q) * h
}

func (e *lineageEvictor) tick() {
	e.clock++
	e.adding, e.match = true, false
	e.expire()
}

// expire counts the records older than lineageExpiry mean gaps as last
// turns.
func (e *lineageEvictor) expire() {
	horizon := lineageExpiry / e.rate()
	for e.expireAt = max(e.expireAt, e.head); e.expireAt < len(e.order); e.expireAt++ {
		ref := e.order[e.expireAt]
		if float64(e.clock-ref.at) <= horizon {
			break
		}
		if r, ok := e.records[ref.key]; ok && r.at == ref.at && !r.expired {
			r.expired = true
			e.records[ref.key] = r
			e.ended[r.turn]++
		}
	}
	e.forget()
}

// forget drops the oldest records beyond maxRecs, counting those not
// expired yet as last turns (they are the oldest, the most likely ended).
func (e *lineageEvictor) forget() {
	for len(e.order)-e.head > e.maxRecs {
		ref := e.order[e.head]
		if r, ok := e.records[ref.key]; ok && r.at == ref.at {
			if !r.expired {
				e.ended[r.turn]++
			}
			delete(e.records, ref.key)
		}
		e.head++
	}
	e.expireAt = max(e.expireAt, e.head)
	if e.head > len(e.order)/2 && e.head > 64 {
		n := copy(e.order, e.order[e.head:])
		e.order = e.order[:n]
		e.expireAt -= e.head
		e.head = 0
	}
}

func (e *lineageEvictor) released(pg int32) {
	e.relAt[pg] = e.clock
	switch {
	case !e.hashed[pg]:
		e.q.push(lqEmpty, pg)
	case e.shared[pg]:
		e.q.push(lqShared, pg)
	default:
		e.q.push(int8(lqTurn0+int(e.cls[pg])), pg)
	}
}

func (e *lineageEvictor) taken(pg int32) { e.q.remove(pg) }

func (e *lineageEvictor) victim() int32 {
	if pg := e.q.head[lqEmpty]; pg != none {
		e.q.remove(pg)
		return pg
	}
	h := e.rate()
	best, bestScore := none, math.Inf(1)
	for q := lqTurn0; q < lineageQueues; q++ {
		if pg := e.q.head[q]; pg != none {
			if s := e.score(pg, h); s < bestScore {
				best, bestScore = pg, s
			}
		}
	}
	if pg := e.q.head[lqShared]; pg != none {
		if best == none || float64(e.hitCount[pg])/float64(e.clock-e.since[pg]+1) < bestScore {
			best = pg
		}
	}
	e.q.remove(best)
	return best
}

// see notes a prompt key of the Add in progress: a record under it is the
// sequence's previous turn (the deepest one wins).
func (e *lineageEvictor) see(k Key) {
	if r, ok := e.records[k]; ok {
		e.match, e.matchKey, e.matchRec = true, k, r
	}
}

func (e *lineageEvictor) hits(pages []int32, next Key, hasNext bool) {
	for _, pg := range pages {
		e.hitCount[pg]++
		e.see(e.keys[pg])
	}
	if len(pages) == 0 || !hasNext {
		return
	}
	if last := pages[len(pages)-1]; e.hasChild[last] && e.child[last] != next {
		for _, pg := range pages {
			e.shared[pg] = true
		}
	}
}

func (e *lineageEvictor) registered(pg, parent int32, k Key) {
	e.shared[pg], e.hitCount[pg], e.since[pg], e.hasChild[pg] = false, 0, e.clock, false
	if parent != none {
		if !e.hasChild[parent] {
			e.hasChild[parent], e.child[parent] = true, k
		}
		e.cls[pg] = e.cls[parent]
	}
	if e.adding {
		e.see(k)
	}
}

func (e *lineageEvictor) added(pages []int32, hit int) {
	e.adding = false
	turn := int8(0)
	if e.match {
		r := e.matchRec
		delete(e.records, e.matchKey)
		if r.expired {
			e.ended[r.turn]--
		}
		e.cont[r.turn]++
		e.gapSum += e.clock - r.at
		e.gaps++
		turn = min(r.turn+1, LineageClasses-1)
	} else {
		for _, pg := range pages[:hit] {
			e.shared[pg] = true // a new conversation starts with it
		}
	}
	for _, pg := range pages {
		e.cls[pg] = turn
	}
}

func (e *lineageEvictor) freeing(pages []int32) {
	for i := len(pages) - 1; i >= 0; i-- {
		if pg := pages[i]; e.hashed[pg] {
			k := e.keys[pg]
			if r, ok := e.records[k]; ok && r.expired {
				e.ended[r.turn]-- // replaced before it was continued: unknown
			}
			e.records[k] = lineageRecord{turn: e.cls[pg], at: e.clock}
			e.order = append(e.order, lineageRef{key: k, at: e.clock})
			e.forget()
			return
		}
	}
}

func (e *lineageEvictor) unregistered(pg int32) {
	e.shared[pg], e.hitCount[pg], e.since[pg], e.hasChild[pg] = false, 0, 0, false
	if q := e.q.in[pg]; q > lqEmpty {
		e.q.remove(pg)
		e.q.push(lqEmpty, pg)
	}
}

func (e *lineageEvictor) reset() {
	for q := int8(lqShared); q < lineageQueues; q++ {
		for e.q.head[q] != none {
			pg := e.q.head[q]
			e.q.remove(pg)
			e.q.push(lqEmpty, pg)
		}
	}
	for pg := range e.since {
		e.shared[pg], e.hitCount[pg], e.since[pg], e.hasChild[pg] = false, 0, 0, false
	}
}

func (e *lineageEvictor) check(p *Pool) []error {
	errs := e.q.check(p, "lineage eviction")
	for pg := range e.q.in {
		q := e.q.in[pg]
		if q < 0 {
			continue
		}
		if (q == lqEmpty) == p.hashed[pg] {
			errs = append(errs, fmt.Errorf("lineage eviction: page %d in queue %d, keyed %v", pg, q, p.hashed[pg]))
		}
		if q == lqShared && !e.shared[pg] {
			errs = append(errs, fmt.Errorf("lineage eviction: page %d in the shared queue is not shared", pg))
		}
	}
	for pg, h := range p.hashed {
		if !h && (e.shared[pg] || e.hitCount[pg] != 0 || e.hasChild[pg]) {
			errs = append(errs, fmt.Errorf("lineage eviction: page %d has no key but keeps shared %v, %d hits, child %v", pg, e.shared[pg], e.hitCount[pg], e.hasChild[pg]))
		}
	}
	for t := range LineageClasses {
		if e.cont[t] < 0 || e.ended[t] < 0 {
			errs = append(errs, fmt.Errorf("lineage eviction: turn %d counts %d continued, %d ended", t, e.cont[t], e.ended[t]))
		}
	}
	if e.head > e.expireAt || e.expireAt > len(e.order) || len(e.records) > len(e.order)-e.head {
		errs = append(errs, fmt.Errorf("lineage eviction: records %d, order %d..%d, expired to %d", len(e.records), e.head, len(e.order), e.expireAt))
	}
	return errs
}

// pageQueues are intrusive doubly linked LRU queues of free pages.
type pageQueues struct {
	next, prev []int32
	in         []int8 // queue of each page; -1: none (held)
	head, tail []int32
	n          []int
}

func newPageQueues(pages, queues int) pageQueues {
	q := pageQueues{
		next: make([]int32, pages), prev: make([]int32, pages), in: make([]int8, pages),
		head: make([]int32, queues), tail: make([]int32, queues), n: make([]int, queues),
	}
	for i := range q.in {
		q.in[i] = -1
	}
	for i := range q.head {
		q.head[i], q.tail[i] = none, none
	}
	return q
}

func (l *pageQueues) push(q int8, pg int32) {
	if l.in[pg] >= 0 {
		panic(fmt.Sprintf("pagemanager: eviction: page %d queued twice", pg))
	}
	l.in[pg] = q
	l.next[pg], l.prev[pg] = none, l.tail[q]
	if l.tail[q] == none {
		l.head[q] = pg
	} else {
		l.next[l.tail[q]] = pg
	}
	l.tail[q] = pg
	l.n[q]++
}

func (l *pageQueues) remove(pg int32) {
	q := l.in[pg]
	if q < 0 {
		panic(fmt.Sprintf("pagemanager: eviction: page %d removed but not queued", pg))
	}
	l.in[pg] = -1
	p, n := l.prev[pg], l.next[pg]
	if p == none {
		l.head[q] = n
	} else {
		l.next[p] = n
	}
	if n == none {
		l.tail[q] = p
	} else {
		l.prev[n] = p
	}
	l.n[q]--
}

// check returns the violations of the queues' structure against the
// pool's free pages; name prefixes the messages.
func (l *pageQueues) check(p *Pool, name string) []error {
	var errs []error
	total := 0
	for q := range l.head {
		count := 0
		for pg := l.head[q]; pg != none; pg = l.next[pg] {
			count++
			if int(l.in[pg]) != q {
				errs = append(errs, fmt.Errorf("%s: page %d in queue %d marked %d", name, pg, q, l.in[pg]))
			}
			if !p.free.contains(pg) {
				errs = append(errs, fmt.Errorf("%s: page %d queued but not free", name, pg))
			}
			if count > len(l.in) {
				return append(errs, errors.New(name+": queue cycle"))
			}
		}
		if count != l.n[q] {
			errs = append(errs, fmt.Errorf("%s: queue %d holds %d pages, counted %d", name, q, count, l.n[q]))
		}
		total += count
	}
	if total != p.free.len() {
		errs = append(errs, fmt.Errorf("%s: %d pages queued, %d free", name, total, p.free.len()))
	}
	return errs
}
