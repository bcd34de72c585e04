package transformer

import "errors"

// Sentinel errors. Returned errors wrap them with the offending values.
var (
	// ErrMetadata reports metadata that NewMetadata or Metadata.Validate rejects.
	ErrMetadata = errors.New("transformer: invalid metadata")
	// ErrShape reports a tensor, mask, index or token-type array of the wrong shape.
	ErrShape = errors.New("transformer: bad shape")
	// ErrDType reports a missing or unsupported dtype.
	ErrDType = errors.New("transformer: bad dtype")
	// ErrOverflow reports a write past the cache's sequence length.
	ErrOverflow = errors.New("transformer: write past the cache length")
	// ErrOutOfRange reports a layer or batch slot out of range.
	ErrOutOfRange = errors.New("transformer: out of range")
	// ErrEmpty reports an operation on an empty view (EasyDeL's None view).
	ErrEmpty = errors.New("transformer: empty view")
	// ErrIncompatible reports caches that cannot be combined (Insert).
	ErrIncompatible = errors.New("transformer: incompatible caches")
	// ErrSnapshot reports a malformed binary snapshot.
	ErrSnapshot = errors.New("transformer: bad snapshot")
)
