package tensor

import "errors"

// Sentinel errors; the returned errors wrap them with the offending values.
var (
	// ErrDType reports an unsupported or mismatched dtype.
	ErrDType = errors.New("tensor: bad dtype")
	// ErrShape reports a shape that does not fit the data or the operation.
	ErrShape = errors.New("tensor: bad shape")
	// ErrRange reports an element, row or chunk index out of range.
	ErrRange = errors.New("tensor: out of range")
	// ErrQuantization reports a quantization request that cannot be honoured.
	ErrQuantization = errors.New("tensor: bad quantization")
	// ErrSnapshot reports a malformed or truncated binary snapshot.
	ErrSnapshot = errors.New("tensor: bad snapshot")
)
