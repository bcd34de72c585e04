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
// Pool goes beyond EasyDeL, to vLLM v1's block pool: reference-counted
// pages, prefix caching keyed by a pinned hash chain (HashPage), LRU
// eviction of cached free pages, fork with copy-on-write of a shared
// partial page, recurrent-state checkpoints for hybrid models, and KV
// events (BlockStored, BlockRemoved, AllBlocksCleared) for external
// indexers. A serving loop drives it per request:
//
//	p, _ := pagemanager.NewPool(pagemanager.PoolConfig{NumPages: n, PageSize: 16, PrefixCaching: true})
//	st, err := p.Add(id, pagemanager.Request{Tokens: prompt, Recompute: 1}) // compute from st.HitTokens on
//	st, err = p.Append(id, []int32{token})                                  // each decode step
//	pages, _, _ := p.BlockTable(id)                                         // the page table to attend over
//	err = p.Free(id)                                                        // pages stay cached until evicted
//
// Pool reports what the caller must do as data: Step says how many tokens
// were hit and which pages to copy (copy-on-write), TakeEvents hands out
// the KV events, TakeDroppedCheckpoints the recurrent checkpoints whose
// state can be released. With Recompute 1, a pool replays vLLM's
// KV-cache manager exactly (hits per request, evictions): see TestVLLMTrace
// and the trace replayer pagemanager/sim.
//
// PoolConfig.Eviction chooses which cached free page an allocation
// evicts: EvictLRU is vLLM's order; EvictShared, a kvmesh extension,
// keeps shared prefixes (system prompts) while they are hit more often
// than private pages, and takes keyless pages first; EvictLineage, also a
// kvmesh extension, follows conversations through their prompts, learns
// how often a turn has a next one, and evicts the pages of conversations
// that have probably ended.
//
// Both allocators rest on an index-linked free list over preallocated
// arrays with O(1) push, pop and removal from the middle.
package pagemanager
