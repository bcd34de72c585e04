package snapshot

import (
	"errors"
	"fmt"
)

// Sentinel errors of Describe. Their messages have no package prefix: they
// follow the file name the caller puts in front (see the package doc).
var (
	// ErrNotSafetensors reports data that is not a safetensors file kvmesh
	// reads (truncated, corrupt, or with an entry of an unsupported dtype);
	// the error wraps tensor.ErrSnapshot or tensor.ErrDType as well.
	ErrNotSafetensors = errors.New("not a valid safetensors snapshot")
	// ErrUnknownFormat reports a "format" that begins with "kvmesh." but is
	// none of Formats.
	ErrUnknownFormat = errors.New("unknown snapshot format")
	// ErrInvalid reports a snapshot that names a kvmesh format but does not
	// decode as that kind (truncated, corrupt, inconsistent); the error
	// wraps the kind's own error as well.
	ErrInvalid = errors.New("invalid snapshot")
)

// invalidError is an ErrInvalid naming the format, which wraps both the
// sentinel and the kind's error.
type invalidError struct {
	format string
	err    error
}

func (e *invalidError) Error() string {
	return fmt.Sprintf("invalid %s snapshot: %v", e.format, e.err)
}

func (e *invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }
