package pagemanager

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/kvmesh/kvmesh/layers/paged"
)

// Config sizes an HBMPageManager.
type Config struct {
	// NumPages is the number of pages per layer, N, the dummy page 0
	// included: pages 1..N-1 can be allocated.
	NumPages int
	// PageSize is the number of tokens per page.
	PageSize int
}

// ConfigFromMetadata returns the Config of a paged cache: NumPages is
// meta.NumPagesPerLayer and PageSize is meta.PageSize (EasyDeL's manager
// takes the metadata itself).
func ConfigFromMetadata(meta paged.Metadata) Config {
	return Config{NumPages: meta.NumPagesPerLayer, PageSize: meta.PageSize}
}

// Validate checks that NumPages is in 2..math.MaxInt32 (page 0 is
// reserved and page indices are int32) and that PageSize is positive.
func (c Config) Validate() error {
	if c.NumPages < 2 || c.NumPages > math.MaxInt32 {
		return fmt.Errorf("%w: %d pages, want 2..%d (page 0 is reserved; page indices are int32)", ErrInvalidConfig, c.NumPages, math.MaxInt32)
	}
	if c.PageSize <= 0 {
		return fmt.Errorf("%w: page size %d, want a positive number of tokens", ErrInvalidConfig, c.PageSize)
	}
	return nil
}

// HBMPageManager hands out the pages of a paged KV cache: EasyDeL's
// HBMPageManager (spec section 7.5). Page 0 is the dummy page and is never
// handed out; pages 1..N-1 start free, in that order, in a FIFO: allocation
// takes pages from the head and freeing appends them at the tail. The same
// page index is used in every layer's pool.
//
// Alloc and free are O(1) per page and allocate nothing but the returned
// slice. An HBMPageManager is safe for concurrent use (EasyDeL's is not:
// its check-then-pop races).
//
// Deviations from EasyDeL, which never raises: an allocation larger than
// the free list is an error wrapping ErrNoFreePages, and a count that is
// not positive is an error wrapping ErrInvalidCount (EasyDeL returns an
// empty list for both); freeing a page that is already free, listing a
// page twice, or a page outside 0..N-1 is an error, and then nothing is
// freed (EasyDeL checks nothing).
type HBMPageManager struct {
	cfg Config

	mu   sync.Mutex
	free freeList // protected by mu: the free pages; every other page but 0 is held
}

// NewHBMPageManager returns a manager whose pages 1..cfg.NumPages-1 are
// all free.
func NewHBMPageManager(cfg Config) (*HBMPageManager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &HBMPageManager{cfg: cfg, free: newFreeList(cfg.NumPages)}
	for i := 1; i < cfg.NumPages; i++ {
		m.free.pushBack(int32(i))
	}
	return m, nil
}

// Config returns the manager's configuration.
func (m *HBMPageManager) Config() Config { return m.cfg }

// PageSize returns the number of tokens per page.
func (m *HBMPageManager) PageSize() int { return m.cfg.PageSize }

// NumPages returns N, the number of pages including the dummy page 0.
func (m *HBMPageManager) NumPages() int { return m.cfg.NumPages }

// CurrentPageIndex returns 0, the dummy page: page tables hold it for
// every unused entry.
func (m *HBMPageManager) CurrentPageIndex() int32 { return 0 }

// NumFree returns the number of free pages.
func (m *HBMPageManager) NumFree() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.free.len()
}

// AllocHBMPages takes n pages from the head of the free list, all or
// nothing. If fewer than n pages are free it returns an error wrapping
// ErrNoFreePages that gives n and the free count, and takes none.
func (m *HBMPageManager) AllocHBMPages(n int) ([]int32, error) {
	if n <= 0 {
		return nil, fmt.Errorf("%w: %d pages requested, want at least 1", ErrInvalidCount, n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if free := m.free.len(); n > free {
		return nil, fmt.Errorf("%w: %d pages requested, %d of %d free", ErrNoFreePages, n, free, m.cfg.NumPages-1)
	}
	pages := make([]int32, n)
	for i := range pages {
		pages[i], _ = m.free.popFront()
	}
	return pages, nil
}

// AllocPrefillHBMPages allocates ceil(promptLen / PageSize) pages, enough
// for a prompt of promptLen tokens.
func (m *HBMPageManager) AllocPrefillHBMPages(promptLen int) ([]int32, error) {
	if promptLen <= 0 {
		return nil, fmt.Errorf("%w: prompt length %d, want at least 1 token", ErrInvalidCount, promptLen)
	}
	return m.AllocHBMPages((promptLen-1)/m.cfg.PageSize + 1)
}

// FreeHBMPages appends pages to the tail of the free list, in order,
// skipping page 0 (the dummy page, which page tables hold for unused
// entries). It is all or nothing: a page outside 0..N-1 (ErrOutOfRange),
// or a page that is already free or listed twice (ErrDoubleFree), is an
// error and frees nothing.
func (m *HBMPageManager) FreeHBMPages(pages []int32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, p := range pages {
		if err := m.checkFreeLocked(pages, i); err != nil {
			// Undo: the pages this call pushed are the tail of the list,
			// so removing them restores the list exactly.
			for _, q := range pages[:i] {
				if q != 0 {
					m.free.remove(q)
				}
			}
			return err
		}
		if p != 0 {
			m.free.pushBack(p)
		}
	}
	return nil
}

// checkFreeLocked checks entry i of a free request, whose entries before i
// have been pushed.
func (m *HBMPageManager) checkFreeLocked(pages []int32, i int) error {
	p := pages[i]
	switch {
	case p == 0:
		return nil
	case p < 0 || int(p) >= m.cfg.NumPages:
		return fmt.Errorf("%w: page %d at entry %d (pages are 0..%d)", ErrOutOfRange, p, i, m.cfg.NumPages-1)
	case !m.free.contains(p):
		return nil
	}
	if j := slices.Index(pages[:i], p); j >= 0 {
		return fmt.Errorf("%w: page %d listed at entries %d and %d", ErrDoubleFree, p, j, i)
	}
	return fmt.Errorf("%w: page %d at entry %d is already free", ErrDoubleFree, p, i)
}
