package pagemanager

import "fmt"

// none marks the end of the free list and an empty list.
const none int32 = -1

// freeList is a FIFO of page indices 0..capacity-1, linked through
// preallocated arrays (an intrusive doubly linked list), with a membership
// bitset. pushBack, popFront, remove and contains are O(1) and never
// allocate; remove takes a page out of the middle, which a pool with a
// prefix cache needs when a cached free page gets a hit.
//
// It checks its contract with panics: pushing a page already in the list,
// removing one that is not, or an index out of range is a programmer error
// in this package. It is not safe for concurrent use.
type freeList struct {
	next, prev []int32  // neighbours of each page in the list; none at the ends
	in         []uint64 // bit i set: page i is in the list
	head, tail int32
	n          int
}

// newFreeList returns an empty list for pages 0..capacity-1.
func newFreeList(capacity int) freeList {
	return freeList{
		next: make([]int32, capacity),
		prev: make([]int32, capacity),
		in:   make([]uint64, (capacity+63)/64),
		head: none,
		tail: none,
	}
}

// len returns the number of pages in the list.
func (l *freeList) len() int { return l.n }

// contains reports whether page i is in the list; i must be in range.
func (l *freeList) contains(i int32) bool { return l.in[i>>6]&(1<<(i&63)) != 0 }

func (l *freeList) mark(i int32, in bool) {
	if in {
		l.in[i>>6] |= 1 << (i & 63)
	} else {
		l.in[i>>6] &^= 1 << (i & 63)
	}
}

// pushBack appends page i at the tail.
func (l *freeList) pushBack(i int32) {
	if l.contains(i) {
		panic(fmt.Sprintf("pagemanager: free list: page %d pushed twice", i))
	}
	l.mark(i, true)
	l.next[i], l.prev[i] = none, l.tail
	if l.tail == none {
		l.head = i
	} else {
		l.next[l.tail] = i
	}
	l.tail = i
	l.n++
}

// popFront removes and returns the page at the head; ok is false when the
// list is empty.
func (l *freeList) popFront() (i int32, ok bool) {
	if l.head == none {
		return none, false
	}
	i = l.head
	l.remove(i)
	return i, true
}

// remove takes page i out of the list, wherever it is.
func (l *freeList) remove(i int32) {
	if !l.contains(i) {
		panic(fmt.Sprintf("pagemanager: free list: page %d removed but not in the list", i))
	}
	l.mark(i, false)
	p, n := l.prev[i], l.next[i]
	if p == none {
		l.head = n
	} else {
		l.next[p] = n
	}
	if n == none {
		l.tail = p
	} else {
		l.prev[n] = p
	}
	l.n--
}

// appendTo appends the pages of the list, head first, to dst.
func (l *freeList) appendTo(dst []int32) []int32 {
	for i := l.head; i != none; i = l.next[i] {
		dst = append(dst, i)
	}
	return dst
}
