package pagemanager

import (
	"errors"
	"fmt"
)

// checkInvariants checks the pool's internal consistency and returns every
// violation found (nil if none). It is O(pages + block-table entries +
// keys); tests call it after every operation.
//
//   - page 0 is never free, held or keyed;
//   - every other page is either free (refcount 0, in the free queue) or
//     held (refcount > 0), never both: free + used = NumPages-1;
//   - each page's refcount equals the number of block-table entries
//     holding it, so their sums are equal;
//   - each sequence has ceil(tokens/PageSize) pages and, with prefix
//     caching, its partial-page tokens, and every full page carries a key,
//     the last one being the sequence's parent key;
//   - the table maps each key to a chain of pages that carry that key,
//     linked both ways, and every keyed page is in its key's chain;
//   - every checkpoint's key is in the table;
//   - an eviction policy's queues hold exactly the free pages, keyless
//     pages apart (evictor.check).
func (p *Pool) checkInvariants() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	n := p.cfg.NumPages
	if p.ref[0] != 0 || p.hashed[0] || p.free.contains(0) {
		bad("page 0: refcount %d, keyed %v, free %v", p.ref[0], p.hashed[0], p.free.contains(0))
	}
	refs := make([]int32, n)
	p.seqs.all(func(id SeqID, s *sequence) {
		ps := p.cfg.PageSize
		if want := (s.n + ps - 1) / ps; len(s.pages) != want {
			bad("seq %d: %d pages for %d tokens, want %d", id, len(s.pages), s.n, want)
		}
		for i, pg := range s.pages {
			if pg <= 0 || int(pg) >= n {
				bad("seq %d: page %d at entry %d out of range", id, pg, i)
				continue
			}
			refs[pg]++
			if p.cfg.PrefixCaching && (i+1)*ps <= s.n && !p.hashed[pg] {
				bad("seq %d: full page %d at entry %d carries no key", id, pg, i)
			}
		}
		if !p.cfg.PrefixCaching {
			return
		}
		if len(s.tail) != s.n%ps {
			bad("seq %d: %d partial-page tokens, want %d", id, len(s.tail), s.n%ps)
		}
		if full := s.n / ps; full > 0 && full <= len(s.pages) && p.key[s.pages[full-1]] != s.parent {
			bad("seq %d: parent key %s, last full page %d has %s", id, s.parent, s.pages[full-1], p.key[s.pages[full-1]])
		}
	})
	used, hashed := 0, 0
	for pg := 1; pg < n; pg++ {
		free := p.free.contains(int32(pg))
		if refs[pg] != p.ref[pg] {
			bad("page %d: refcount %d, block tables hold it %d times", pg, p.ref[pg], refs[pg])
		}
		switch {
		case p.ref[pg] < 0:
			bad("page %d: refcount %d", pg, p.ref[pg])
		case p.ref[pg] > 0 && free:
			bad("page %d: held (refcount %d) and free", pg, p.ref[pg])
		case p.ref[pg] == 0 && !free:
			bad("page %d: neither held nor free", pg)
		}
		if p.ref[pg] > 0 {
			used++
		}
		if p.hashed[pg] {
			hashed++
			if c, ok := p.table[p.key[pg]]; !ok || !p.inChain(c, int32(pg)) {
				bad("page %d: key %s but not in its chain", pg, p.key[pg])
			}
		}
	}
	if used != p.used || used+p.free.len() != n-1 {
		bad("used %d (counted %d) + free %d != %d pages", p.used, used, p.free.len(), n-1)
	}
	if hashed != p.numHashed {
		bad("%d keyed pages, counted %d", hashed, p.numHashed)
	}
	chained := 0
	for k, c := range p.table {
		prev := none
		for pg := c.head; pg != none; pg = p.dupNext[pg] {
			if !p.hashed[pg] || p.key[pg] != k {
				bad("key %s: chain holds page %d carrying %s (keyed %v)", k, pg, p.key[pg], p.hashed[pg])
			}
			if p.dupPrev[pg] != prev {
				bad("key %s: page %d links back to %d, want %d", k, pg, p.dupPrev[pg], prev)
			}
			prev = pg
			chained++
			if chained > n {
				return errors.Join(append(errs, fmt.Errorf("key %s: chain loops", k))...)
			}
		}
		if prev != c.tail || c.head == none {
			bad("key %s: chain head %d tail %d, walk ends at %d", k, c.head, c.tail, prev)
		}
	}
	if chained != hashed {
		bad("%d pages in key chains, %d keyed", chained, hashed)
	}
	for k := range p.ckpts {
		if _, ok := p.table[k]; !ok {
			bad("checkpoint for key %s, which is not cached", k)
		}
	}
	if p.ev != nil {
		errs = append(errs, p.ev.check(p)...)
	}
	return errors.Join(errs...)
}

// inChain reports whether page pg is in chain c.
func (p *Pool) inChain(c chain, pg int32) bool {
	for q := c.head; q != none; q = p.dupNext[q] {
		if q == pg {
			return true
		}
	}
	return false
}
