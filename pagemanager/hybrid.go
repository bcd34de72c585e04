package pagemanager

import "fmt"

// Checkpoint is the caller's handle for a recurrent-state checkpoint
// (Mamba, Mamba2 or Lightning conv and SSM states saved at a page
// boundary). The pool only records which boundaries have one; the state
// itself lives with the recurrent layers. NoCheckpoint (0) means none.
type Checkpoint uint64

// NoCheckpoint is the zero Checkpoint: no checkpoint.
const NoCheckpoint Checkpoint = 0

// PutCheckpoint records that checkpoint c holds the recurrent state of
// sequence id after its first tokens tokens, a page boundary: it is keyed
// by the key of the page that ends there, so any sequence with the same
// prefix can restore it. If that key already has a checkpoint, the pool
// keeps the one it has and returns stored = false: c stays the caller's to
// release. A stored checkpoint lives as long as its key is cached; when
// the key is evicted (or the cache reset) the checkpoint is dropped and
// handed back by TakeDroppedCheckpoints.
//
// It is an error wrapping ErrInvalidCheckpoint if the pool is not hybrid,
// c is NoCheckpoint, or tokens is not a positive multiple of PageSize up
// to the sequence's length; an unknown id is ErrUnknownSequence.
func (p *Pool) PutCheckpoint(id SeqID, tokens int, c Checkpoint) (stored bool, err error) {
	if !p.cfg.Hybrid {
		return false, fmt.Errorf("%w: checkpoint %d for sequence %d in a pool that is not hybrid", ErrInvalidCheckpoint, c, id)
	}
	if c == NoCheckpoint {
		return false, fmt.Errorf("%w: zero handle for sequence %d at %d tokens", ErrInvalidCheckpoint, id, tokens)
	}
	s := p.seqs.get(id)
	if s == nil {
		return false, fmt.Errorf("%w: sequence %d", ErrUnknownSequence, id)
	}
	ps := p.cfg.PageSize
	if tokens <= 0 || tokens%ps != 0 || tokens > s.n {
		return false, fmt.Errorf("%w: checkpoint %d at %d tokens of sequence %d, want a positive multiple of %d up to %d", ErrInvalidCheckpoint, c, tokens, id, ps, s.n/ps*ps)
	}
	k := p.key[s.pages[tokens/ps-1]] // full, held: it carries its key
	if _, ok := p.ckpts[k]; ok {
		return false, nil
	}
	p.ckpts[k] = c
	return true, nil
}

// TakeDroppedCheckpoints returns the checkpoints dropped since the last
// call (their keys were evicted), whose state the caller can now release,
// and forgets them.
func (p *Pool) TakeDroppedCheckpoints() []Checkpoint {
	d := p.dropped
	p.dropped = nil
	return d
}

// NumCheckpoints returns the number of checkpoints the pool holds.
func (p *Pool) NumCheckpoints() int { return len(p.ckpts) }

// restorable returns the number of leading pages of a hit, given by their
// keys, that end at a boundary with a checkpoint: the longest prefix that
// can be restored in a hybrid pool.
func (p *Pool) restorable(keys []Key) int {
	for n := len(keys); n > 0; n-- {
		if _, ok := p.ckpts[keys[n-1]]; ok {
			return n
		}
	}
	return 0
}

// restoreAt returns, in a hybrid pool, the checkpoint at the end of a hit
// given by its keys.
func (p *Pool) restoreAt(keys []Key) Checkpoint {
	if !p.cfg.Hybrid || len(keys) == 0 {
		return NoCheckpoint
	}
	return p.ckpts[keys[len(keys)-1]]
}
