package pagemanager

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Key identifies the content of a full page together with everything
// before it: the prefix-cache key, a link of a hash chain. Two pages have
// the same Key when they hold the same tokens, under the same extra keys,
// after the same prefix.
type Key uint64

// String returns the key as 16 hexadecimal digits.
func (k Key) String() string { return fmt.Sprintf("%016x", uint64(k)) }

// short returns the first four hexadecimal digits, for Describe.
func (k Key) short() string { return fmt.Sprintf("%04x", uint64(k)>>48) }

// HashVersion is the version byte that starts every hashed message. It
// changes whenever the encoding below changes, so keys of two versions
// never meet.
const HashVersion byte = 1

// RootKey is the parent key of a sequence's first page (the seed of every
// chain).
const RootKey Key = 0

// HashPage returns the key of a full page: the first 8 bytes of the
// SHA-256 digest, read as a little-endian uint64, of this message:
//
//	HashVersion                    1 byte (0x01)
//	parent                         8 bytes, uint64 little-endian (RootKey = 0 for the first page)
//	len(tokens)                    4 bytes, uint32 little-endian
//	tokens                         4 bytes each, uint32(token) little-endian
//	len(extra)                     4 bytes, uint32 little-endian
//	for each extra key: len(key)   4 bytes, uint32 little-endian
//	                    key        its bytes (UTF-8 as given)
//
// The keys are the same in every process and on every machine: the hash is
// not seeded. Extra keys isolate caches that must not share pages even for
// equal tokens: an adapter name, a cache salt, multimodal input hashes.
// Pool applies a sequence's extra keys to every page of it (vLLM mixes a
// cache salt into the first page only; through the chain the effect is the
// same).
func HashPage(parent Key, tokens []int32, extra []string) Key {
	var h hasher
	return h.sum(parent, tokens, encodeExtra(nil, extra))
}

// ChainKeys returns the keys of the full pages of tokens, each chained to
// the one before, starting from RootKey: the keys a sequence of these tokens
// registers in a Pool with this page size.
func ChainKeys(tokens []int32, pageSize int, extra []string) []Key {
	if pageSize <= 0 {
		panic(fmt.Sprintf("pagemanager: ChainKeys: page size %d", pageSize))
	}
	var h hasher
	enc := encodeExtra(nil, extra)
	keys := make([]Key, 0, len(tokens)/pageSize)
	parent := RootKey
	for i := 0; i+pageSize <= len(tokens); i += pageSize {
		parent = h.sum(parent, tokens[i:i+pageSize], enc)
		keys = append(keys, parent)
	}
	return keys
}

// encodeExtra appends the encoding of the extra keys (count, then each key
// length-prefixed) to dst.
func encodeExtra(dst []byte, extra []string) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(extra)))
	for _, e := range extra {
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(e)))
		dst = append(dst, e...)
	}
	return dst
}

// hasher computes page keys, reusing its message buffer.
type hasher struct{ buf []byte }

// sum returns the key of a page; extraEnc is encodeExtra's output.
func (h *hasher) sum(parent Key, tokens []int32, extraEnc []byte) Key {
	b := append(h.buf[:0], HashVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(parent))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(tokens)))
	for _, t := range tokens {
		b = binary.LittleEndian.AppendUint32(b, uint32(t))
	}
	b = append(b, extraEnc...)
	h.buf = b
	d := sha256.Sum256(b)
	return Key(binary.LittleEndian.Uint64(d[:8]))
}

// chain is the list of pages registered under one key, in registration
// order, linked through Pool.dupNext and Pool.dupPrev. Lookups return the
// head: the first page registered.
type chain struct{ head, tail int32 }

// register gives page pg the key k and appends it to k's chain.
func (p *Pool) register(pg int32, k Key) {
	p.key[pg] = k
	p.hashed[pg] = true
	p.numHashed++
	p.dupNext[pg] = none
	c, ok := p.table[k]
	if !ok {
		p.dupPrev[pg] = none
		p.table[k] = chain{pg, pg}
		return
	}
	p.dupPrev[pg] = c.tail
	p.dupNext[c.tail] = pg
	c.tail = pg
	p.table[k] = c
}

// unregister takes page pg's key away: the page leaves its key's chain,
// and when it was the last page with that key the key leaves the table,
// is reported in a BlockRemoved event and loses its checkpoint.
func (p *Pool) unregister(pg int32) {
	k := p.key[pg]
	p.hashed[pg] = false
	p.numHashed--
	if p.ev != nil {
		p.ev.unregistered(pg)
	}
	c := p.table[k]
	prev, next := p.dupPrev[pg], p.dupNext[pg]
	if prev == none {
		c.head = next
	} else {
		p.dupNext[prev] = next
	}
	if next == none {
		c.tail = prev
	} else {
		p.dupPrev[next] = prev
	}
	if c.head == none {
		delete(p.table, k)
		p.keyGone(k)
		return
	}
	p.table[k] = c
}

// cachedPage returns the first page registered under k.
func (p *Pool) cachedPage(k Key) (int32, bool) {
	c, ok := p.table[k]
	return c.head, ok
}

// Hit is the result of a prefix-cache lookup.
type Hit struct {
	// Tokens is the number of leading tokens whose keys and values are
	// cached: a multiple of the page size.
	Tokens int
	// Pages are the cached pages holding them, in order.
	Pages []int32
	// Restore is, in a hybrid pool, the recurrent-state checkpoint at the
	// boundary Tokens (NoCheckpoint when Tokens is 0 or the pool is not
	// hybrid).
	Restore Checkpoint
}

// Lookup returns the longest cached prefix of a prompt without changing
// the pool: what Add would reuse. The hit covers full pages only, at most
// len(tokens)-recompute tokens; in a hybrid pool it ends at the longest
// boundary that has a recurrent checkpoint. It costs one hash per page up
// to the first miss. recompute outside 0..len(tokens) is an error wrapping
// ErrInvalidRequest.
func (p *Pool) Lookup(tokens []int32, extra []string, recompute int) (Hit, error) {
	if err := checkRecompute(len(tokens), recompute); err != nil {
		return Hit{}, fmt.Errorf("%w: lookup: %s", ErrInvalidRequest, err)
	}
	if !p.cfg.PrefixCaching {
		return Hit{}, nil
	}
	p.extraBuf = encodeExtra(p.extraBuf[:0], extra)
	keys, n := p.match(p.keyBuf[:0], tokens, p.extraBuf, recompute)
	p.keyBuf = keys
	hit := Hit{Tokens: n * p.cfg.PageSize, Restore: p.restoreAt(keys[:n])}
	if n > 0 {
		hit.Pages = make([]int32, n)
		for i, k := range keys[:n] {
			hit.Pages[i], _ = p.cachedPage(k)
		}
	}
	return hit, nil
}

// checkRecompute checks the number of trailing prompt tokens that a hit
// must leave to be recomputed; the caller wraps the error.
func checkRecompute(promptLen, recompute int) error {
	if recompute < 0 || recompute > promptLen {
		return fmt.Errorf("recompute %d tokens of a %d-token prompt, want 0..%d", recompute, promptLen, promptLen)
	}
	return nil
}

// match appends to keys the chained keys of the prompt's leading full
// pages while they are cached, capped at (len(tokens)-recompute)/PageSize
// pages, plus the key of the first page that missed if it was computed.
// It returns the keys and the number of pages hit, limited in a hybrid
// pool to the last boundary with a checkpoint.
func (p *Pool) match(keys []Key, tokens []int32, extraEnc []byte, recompute int) ([]Key, int) {
	ps := p.cfg.PageSize
	limit := (len(tokens) - recompute) / ps
	parent := RootKey
	n := 0
	for ; n < limit; n++ {
		k := p.h.sum(parent, tokens[n*ps:(n+1)*ps], extraEnc)
		keys = append(keys, k)
		if _, ok := p.table[k]; !ok {
			break
		}
		parent = k
	}
	if p.cfg.Hybrid {
		n = p.restorable(keys[:n])
	}
	return keys, n
}
