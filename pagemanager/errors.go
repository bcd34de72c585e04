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

// Sentinel errors of Pool.
var (
	// ErrInvalidRequest reports an empty prompt or append, or a number of
	// tokens to recompute outside the prompt.
	ErrInvalidRequest = errors.New("pagemanager: invalid request")
	// ErrUnknownSequence reports a sequence id the pool does not hold.
	ErrUnknownSequence = errors.New("pagemanager: unknown sequence")
	// ErrSequenceExists reports adding or forking into a sequence id the
	// pool already holds.
	ErrSequenceExists = errors.New("pagemanager: sequence exists")
	// ErrPoolBusy reports resetting the prefix cache while sequences hold
	// pages.
	ErrPoolBusy = errors.New("pagemanager: pool busy")
	// ErrInvalidCheckpoint reports a recurrent-state checkpoint that cannot
	// be recorded: a pool that is not hybrid, a zero handle, or a boundary
	// that is not a full page of the sequence.
	ErrInvalidCheckpoint = errors.New("pagemanager: invalid checkpoint")
	// ErrEventGap reports KV events missing from a subscriber's stream.
	ErrEventGap = errors.New("pagemanager: kv event gap")
	// ErrEventOrder reports a KV event repeated or out of order.
	ErrEventOrder = errors.New("pagemanager: kv event out of order")
)
