package pagemanager

import "fmt"

// Copy is a copy-on-write effect: before writing into page Dst, the cache
// layer copies the first Tokens token slots of every layer's page Src into
// it.
type Copy struct {
	Src, Dst int32
	Tokens   int
}

// String returns "src->dst (n tokens)".
func (c Copy) String() string { return fmt.Sprintf("%d->%d (%d tokens)", c.Src, c.Dst, c.Tokens) }

// Fork makes sequence dst a copy of sequence src, for parallel sampling
// or beam search: dst gets the same block table, every page of which gains
// a reference, so full pages are shared for good. A partial last page is
// shared too until either sequence appends to it; the first such Append
// gives the appending sequence its own copy (Step.Copies), and the other
// one then writes in place. Every append into a shared partial page is
// treated as divergent: the pool does not compare the tokens.
//
// Fork needs no free page and cannot run out of memory. An unknown src is
// ErrUnknownSequence; an existing dst (or dst == src) is
// ErrSequenceExists.
func (p *Pool) Fork(src, dst SeqID) error {
	s := p.seqs.get(src)
	if s == nil {
		return fmt.Errorf("%w: fork source %d", ErrUnknownSequence, src)
	}
	if p.seqs.get(dst) != nil {
		return fmt.Errorf("%w: fork destination %d (source %d)", ErrSequenceExists, dst, src)
	}
	d := p.newSequence()
	d.pages = append(d.pages, s.pages...)
	d.tail = append(d.tail, s.tail...)
	d.n, d.parent = s.n, s.parent
	d.extra, d.extraEnc = s.extra, s.extraEnc // never modified: shared
	for _, pg := range d.pages {
		p.ref[pg]++
	}
	p.seqs.put(dst, d)
	return nil
}

// copyLast replaces the shared partial last page of s with a page from the
// free queue and returns the copy the cache layer must make. The caller has
// checked that the page is shared and partial and that a page is free;
// evicted reports that the new page was a cached one.
func (p *Pool) copyLast(s *sequence) (c Copy, evicted bool) {
	last := len(s.pages) - 1
	src := s.pages[last]
	dst, evicted := p.pop()
	p.ref[src]-- // still >= 1: the page was shared
	s.pages[last] = dst
	p.stats.Copies++
	return Copy{Src: src, Dst: dst, Tokens: s.n % p.cfg.PageSize}, evicted
}
