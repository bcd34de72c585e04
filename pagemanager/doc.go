// Package pagemanager allocates the pages of kvmesh's paged KV cache
// (layers/paged): which physical page each sequence's tokens go to. It
// does not hold keys or values.
//
// HBMPageManager is EasyDeL's HBMPageManager (spec section 7.5): a FIFO
// free list of pages 1..N-1, page 0 being the dummy page that page tables
// hold for unused entries; all-or-nothing allocation; freed pages go to
// the tail. kvmesh adds errors where EasyDeL returns an empty list or
// checks nothing (an impossible allocation, a double free, a page out of
// range) and a mutex.
//
// The free list is an index-linked list over preallocated arrays with O(1)
// push, pop and removal from the middle, so that a serving-grade pool with
// reference counts, a prefix cache and LRU eviction can be built on it.
package pagemanager
