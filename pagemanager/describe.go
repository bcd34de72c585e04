package pagemanager

import (
	"fmt"
	"slices"
	"strings"
)

// String returns Describe().
func (p *Pool) String() string { return p.Describe() }

// Describe returns the pool's state as text, one fact per line, for
// tests and debugging:
//
//	used 3, free 4 (cached 1), keys 3
//	seq 1: 6 tokens, pages [1 2 3], refs [2 2 1]
//	free: 5 6 4* 7
//	keys: 3f2a=1 91bc=4,6
//	checkpoints: 3f2a=7
//
// Sequences are in id order; free pages in queue order, the next page to
// be taken first (with EvictLRU; under another eviction policy, the order
// they were freed in), a star marking a cached one; keys (first 4 hex digits)
// in key order with the pages carrying them in registration order, the
// first being the one a lookup returns; checkpoints (hybrid pools) by key.
func (p *Pool) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "used %d, free %d (cached %d), keys %d\n", p.used, p.free.len(), p.numHashed-p.heldHashed(), len(p.table))
	for _, id := range p.Sequences() {
		s := p.seqs.get(id)
		refs := make([]int32, len(s.pages))
		for i, pg := range s.pages {
			refs[i] = p.ref[pg]
		}
		fmt.Fprintf(&b, "seq %d: %d tokens, pages %v, refs %v\n", id, s.n, s.pages, refs)
	}
	b.WriteString("free:")
	for pg := p.free.head; pg != none; pg = p.free.next[pg] {
		fmt.Fprintf(&b, " %d", pg)
		if p.hashed[pg] {
			b.WriteByte('*')
		}
	}
	b.WriteByte('\n')
	keys := make([]Key, 0, len(p.table))
	for k := range p.table {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) > 0 {
		b.WriteString("keys:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=", k.short())
			for i, pg := range p.chainPages(k) {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%d", pg)
			}
		}
		b.WriteByte('\n')
	}
	if len(p.ckpts) > 0 {
		keys = keys[:0]
		for k := range p.ckpts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteString("checkpoints:")
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k.short(), p.ckpts[k])
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// heldHashed returns the number of held pages that carry a key.
func (p *Pool) heldHashed() int {
	n := 0
	for pg, h := range p.hashed {
		if h && p.ref[pg] > 0 {
			n++
		}
	}
	return n
}

// chainPages returns the pages carrying key k, in registration order.
func (p *Pool) chainPages(k Key) []int32 {
	var pages []int32
	if c, ok := p.table[k]; ok {
		for pg := c.head; pg != none; pg = p.dupNext[pg] {
			pages = append(pages, pg)
		}
	}
	return pages
}
