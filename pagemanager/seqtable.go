package pagemanager

// seqTable maps sequence ids to sequences: an open-addressing hash table
// with linear probing and backward-shift deletion. It replaces a Go map on
// the Add and Free path, where map insertion and deletion were most of the
// cost of a one-page request. Ids are hashed by a fixed multiplicative
// hash: the caller (the scheduler) chooses them, so they are trusted.
type seqTable struct {
	slots []seqSlot // a power of two; s == nil marks an empty slot
	n     int
	shift uint // 64 - log2(len(slots))
}

type seqSlot struct {
	id SeqID
	s  *sequence
}

const seqTableMin = 16

func (t *seqTable) home(id SeqID) int {
	return int((uint64(id) * 0x9e3779b97f4a7c15) >> t.shift)
}

// get returns the sequence with this id, or nil.
func (t *seqTable) get(id SeqID) *sequence {
	if t.n == 0 {
		return nil
	}
	mask := len(t.slots) - 1
	for i := t.home(id); ; i = (i + 1) & mask {
		switch sl := &t.slots[i]; {
		case sl.s == nil:
			return nil
		case sl.id == id:
			return sl.s
		}
	}
}

// put adds a sequence under an id that is not in the table.
func (t *seqTable) put(id SeqID, s *sequence) {
	if 2*(t.n+1) > len(t.slots) { // keep the load at most 1/2
		t.grow()
	}
	mask := len(t.slots) - 1
	i := t.home(id)
	for t.slots[i].s != nil {
		i = (i + 1) & mask
	}
	t.slots[i] = seqSlot{id, s}
	t.n++
}

// remove deletes the id and returns its sequence, or nil if absent.
func (t *seqTable) remove(id SeqID) *sequence {
	if t.n == 0 {
		return nil
	}
	mask := len(t.slots) - 1
	i := t.home(id)
	for {
		sl := &t.slots[i]
		if sl.s == nil {
			return nil
		}
		if sl.id == id {
			break
		}
		i = (i + 1) & mask
	}
	s := t.slots[i].s
	// Backward shift: move later entries of the probe run into the hole
	// when their home is not between the hole and them.
	for j := (i + 1) & mask; t.slots[j].s != nil; j = (j + 1) & mask {
		if (j-t.home(t.slots[j].id))&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = seqSlot{}
	t.n--
	return s
}

func (t *seqTable) grow() {
	old := t.slots
	size := max(seqTableMin, 2*len(old))
	t.slots = make([]seqSlot, size)
	t.shift = 64
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	t.n = 0
	for _, sl := range old {
		if sl.s != nil {
			t.put(sl.id, sl.s)
		}
	}
}

// len returns the number of sequences.
func (t *seqTable) len() int { return t.n }

// all calls f for every sequence, in no particular order.
func (t *seqTable) all(f func(SeqID, *sequence)) {
	for _, sl := range t.slots {
		if sl.s != nil {
			f(sl.id, sl.s)
		}
	}
}
