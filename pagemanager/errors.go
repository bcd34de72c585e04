package pagemanager

import "errors"

// Sentinel errors; the returned errors wrap them with the offending values.
var (
	// ErrNoFreePages reports an allocation larger than the free list.
	ErrNoFreePages = errors.New("pagemanager: no free pages")
	// ErrInvalidCount reports a page count or prompt length that is not
	// positive.
	ErrInvalidCount = errors.New("pagemanager: bad page count")
	// ErrOutOfRange reports a page index outside the allocatable pages
	// 1..N-1.
	ErrOutOfRange = errors.New("pagemanager: page out of range")
	// ErrDoubleFree reports freeing a page that is already free, or
	// listing a page twice in one free.
	ErrDoubleFree = errors.New("pagemanager: double free")
	// ErrInvalidConfig reports a Config outside its valid range.
	ErrInvalidConfig = errors.New("pagemanager: invalid config")
)
