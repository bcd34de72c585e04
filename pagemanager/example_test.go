package pagemanager_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/pagemanager"
)

// Example replays the test vector of EasyDeL's HBMPageManager: five pages,
// page 0 reserved, FIFO reuse of freed pages.
func Example() {
	m, err := pagemanager.NewHBMPageManager(pagemanager.Config{NumPages: 5, PageSize: 4})
	if err != nil {
		panic(err)
	}
	prompt, _ := m.AllocPrefillHBMPages(5) // ceil(5/4) = 2 pages
	fmt.Println("prompt pages:", prompt)

	_, err = m.AllocHBMPages(3)
	fmt.Println("alloc 3:", errors.Is(err, pagemanager.ErrNoFreePages), err)

	_ = m.FreeHBMPages([]int32{0, 1}) // page 0 is the dummy page: ignored
	pages, _ := m.AllocHBMPages(3)
	fmt.Println("after freeing page 1:", pages)

	fmt.Println("double free:", m.FreeHBMPages([]int32{2, 2}))
	// Output:
	// prompt pages: [1 2]
	// alloc 3: true pagemanager: no free pages: 3 pages requested, 2 of 4 free
	// after freeing page 1: [3 4 1]
	// double free: pagemanager: double free: page 2 listed at entries 0 and 1
}

// ExamplePool shows prefix caching, fork with copy-on-write and KV
// events on a pool of 8 pages (7 usable) of 4 tokens.
func ExamplePool() {
	p, err := pagemanager.NewPool(pagemanager.PoolConfig{NumPages: 8, PageSize: 4, PrefixCaching: true, Events: true})
	if err != nil {
		panic(err)
	}
	system := []int32{101, 102, 103, 104, 105, 106, 107, 108} // a shared system prompt: 2 full pages

	// A first request computes everything; its full pages get keys.
	st, _ := p.Add(1, pagemanager.Request{Tokens: append(system, 1, 2), Recompute: 1})
	fmt.Printf("request 1: hit %d tokens, %d new pages\n", st.HitTokens, st.NewPages)
	_ = p.Free(1) // its pages stay cached in the free queue

	// A second request with the same system prompt reuses its pages.
	st, _ = p.Add(2, pagemanager.Request{Tokens: append(system, 7, 8, 9), Recompute: 1})
	pages, _, _ := p.BlockTable(2)
	fmt.Printf("request 2: hit %d tokens, block table %v\n", st.HitTokens, pages)

	// Parallel sampling: the fork shares every page; the first append
	// into the shared partial page copies it.
	_ = p.Fork(2, 3)
	st, _ = p.Append(3, []int32{10})
	fmt.Println("sample 3 appends: copy", st.Copies)

	// The events let a router index the cache: BlockStored carries the
	// keys, the parent key and the tokens.
	keys := pagemanager.ChainKeys(system, 4, nil)
	for _, e := range p.TakeEvents() {
		if s, ok := e.(pagemanager.BlockStored); ok {
			fmt.Printf("event %d: stored %d page(s), after the root: %v, after the system prompt: %v\n",
				s.Seq, len(s.Hashes), s.Parent == pagemanager.RootKey, s.Parent == keys[1])
		}
	}
	// Output:
	// request 1: hit 0 tokens, 3 new pages
	// request 2: hit 8 tokens, block table [1 2 4]
	// sample 3 appends: copy [4->5 (3 tokens)]
	// event 1: stored 2 page(s), after the root: true, after the system prompt: false
	// event 2: stored 1 page(s), after the root: false, after the system prompt: true
}
