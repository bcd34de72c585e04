package lightning

import "errors"

// Sentinel errors. Returned errors wrap them with the offending values.
var (
	// ErrMetadata reports metadata that NewMetadata or Metadata.Validate rejects.
	ErrMetadata = errors.New("lightning: invalid metadata")
	// ErrShape reports a key, value, state or slope list of the wrong shape.
	ErrShape = errors.New("lightning: bad shape")
	// ErrDType reports a missing or unsupported dtype.
	ErrDType = errors.New("lightning: bad dtype")
	// ErrOutOfRange reports a layer or batch row out of range (EasyDeL's IndexError).
	ErrOutOfRange = errors.New("lightning: out of range")
	// ErrEmpty reports an operation on an empty view (EasyDeL's None view).
	ErrEmpty = errors.New("lightning: empty view")
	// ErrIncompatible reports inputs that disagree with the metadata or the
	// state, or views and caches that cannot be combined (Insert).
	ErrIncompatible = errors.New("lightning: incompatible state")
	// ErrSlope reports a slope rate (decay) that is not a finite number, or
	// SlopeRates arguments out of range.
	ErrSlope = errors.New("lightning: bad slope rate")
	// ErrSnapshot reports a malformed binary snapshot.
	ErrSnapshot = errors.New("lightning: bad snapshot")
)
