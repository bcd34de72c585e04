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
