package mamba2

import "errors"

// Sentinel errors. Returned errors wrap them with the offending values.
var (
	// ErrMetadata reports metadata that NewMetadata or Metadata.Validate rejects.
	ErrMetadata = errors.New("mamba2: invalid metadata")
	// ErrShape reports an input state, column or position list of the wrong shape.
	ErrShape = errors.New("mamba2: bad shape")
	// ErrDType reports a missing or unsupported dtype.
	ErrDType = errors.New("mamba2: bad dtype")
	// ErrOutOfRange reports a layer or batch row out of range (EasyDeL's IndexError).
	ErrOutOfRange = errors.New("mamba2: out of range")
	// ErrEmpty reports an operation on an empty view (EasyDeL's None view).
	ErrEmpty = errors.New("mamba2: empty view")
	// ErrIncompatible reports views or caches that cannot be combined (Insert).
	ErrIncompatible = errors.New("mamba2: incompatible caches")
	// ErrSnapshot reports a malformed binary snapshot.
	ErrSnapshot = errors.New("mamba2: bad snapshot")
)
