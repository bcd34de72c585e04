package paged

import "errors"

// Sentinel errors; the returned errors wrap them with the offending values.
var (
	// ErrInvalidMetadata reports a MetadataConfig or Metadata field outside
	// its valid range.
	ErrInvalidMetadata = errors.New("paged: invalid metadata")
	// ErrMemory reports memory statistics that cannot be read or make no
	// sense.
	ErrMemory = errors.New("paged: bad memory stats")
	// ErrBudget reports a memory budget too small for the page pool.
	ErrBudget = errors.New("paged: memory budget too small")
	// ErrOutOfRange reports a layer, position or page index outside its
	// range.
	ErrOutOfRange = errors.New("paged: out of range")
	// ErrShape reports a tensor or table whose shape does not fit the
	// cache or the step.
	ErrShape = errors.New("paged: bad shape")
	// ErrDType reports an invalid or mismatched dtype.
	ErrDType = errors.New("paged: bad dtype")
	// ErrStep reports a StepMetadata that lacks the part a write needs or
	// whose parts disagree.
	ErrStep = errors.New("paged: bad step metadata")
	// ErrSnapshot reports a binary snapshot that does not decode to a view
	// or cache.
	ErrSnapshot = errors.New("paged: bad snapshot")
)

// ErrAbsentView reports an operation on the zero View (an absent layer of
// a Cache made by InitEmpty).
var ErrAbsentView = errors.New("paged: absent view")
