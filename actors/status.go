package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/kvmesh/kvmesh/layers/lightning"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/mamba2"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/transformer"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// Sentinel errors of the runtime. Errors returned by the API wrap one of
// them (or a core package's sentinel, for bad input) with the cache, the
// operation and the offending value.
var (
	// ErrStale reports a step or transaction whose base version is no
	// longer the current one: it is rejected, never merged.
	ErrStale = errors.New("actors: stale base version")
	// ErrTimeout reports a request that did not complete within its timeout.
	ErrTimeout = errors.New("actors: timed out")
	// ErrBusy reports a request refused because too many are in flight.
	ErrBusy = errors.New("actors: too many requests in flight")
	// ErrNotFound reports an unknown cache, version or transaction.
	ErrNotFound = errors.New("actors: not found")
	// ErrClosed reports a request to a closed cache or runtime.
	ErrClosed = errors.New("actors: closed")
	// ErrInternal reports a failure inside the runtime, such as a layer
	// actor that panicked; committed data is intact.
	ErrInternal = errors.New("actors: internal error")
	// ErrKind reports a write of one cache kind sent to a layer of another.
	ErrKind = errors.New("actors: write does not match the cache kind")
	// ErrInvalid reports a request that is malformed on its face (no
	// writes, a layer out of range, a duplicate layer).
	ErrInvalid = errors.New("actors: invalid request")
)

// codes maps sentinels to wire status codes, most specific first.
var codes = []struct {
	err  error
	code messages.Code
}{
	{ErrStale, messages.Code_CODE_STALE_VERSION},
	{ErrTimeout, messages.Code_CODE_TIMEOUT},
	{ErrBusy, messages.Code_CODE_BUSY},
	{ErrNotFound, messages.Code_CODE_NOT_FOUND},
	{ErrClosed, messages.Code_CODE_CLOSED},
	{ErrInternal, messages.Code_CODE_INTERNAL},
	{ErrInvalid, messages.Code_CODE_INVALID_ARGUMENT},
	{ErrKind, messages.Code_CODE_INVALID_ARGUMENT},
	{pagemanager.ErrNoFreePages, messages.Code_CODE_NO_FREE_PAGES},
	{transformer.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
	{transformer.ErrOverflow, messages.Code_CODE_OUT_OF_RANGE},
	{paged.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
	{mamba.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
	{mamba2.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
	{lightning.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
	{pagemanager.ErrOutOfRange, messages.Code_CODE_OUT_OF_RANGE},
}

// StatusOf turns an error into the status the runtime's actors (and the
// clustered runtime's grains) reply with: across actors a code and a
// message travel, never a Go error value. A nil error is CODE_OK; an error
// matching none of the runtime's or the core packages' sentinels is
// CODE_INVALID_ARGUMENT. StatusError turns it back.
func StatusOf(err error) *messages.Status { return statusOf(err) }

// statusOf is StatusOf.
func statusOf(err error) *messages.Status {
	if err == nil {
		return &messages.Status{Code: messages.Code_CODE_OK}
	}
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return &messages.Status{Code: c.code, Message: err.Error()}
		}
	}
	return &messages.Status{Code: messages.Code_CODE_INVALID_ARGUMENT, Message: err.Error()}
}

// StatusError is the error the API returns for a failed reply: the wire
// code and message. errors.Is matches it against the runtime's sentinels
// by code.
type StatusError struct {
	Code    messages.Code
	Message string
}

func (e *StatusError) Error() string { return e.Message }

// Is reports whether target is the sentinel of e's code.
func (e *StatusError) Is(target error) bool {
	for _, c := range codes {
		if c.code == e.Code && c.err == target {
			return true
		}
	}
	return false
}

// errorOf turns a reply status back into an error (nil for OK).
func errorOf(s *messages.Status) error {
	if s == nil || s.Code == messages.Code_CODE_OK {
		return nil
	}
	return &StatusError{Code: s.Code, Message: s.Message}
}

func errorf(sentinel error, format string, a ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))
}

// Code names err's status code as the metrics label it: "ok" for nil,
// "canceled" and "deadline_exceeded" for a done context, otherwise the
// wire code in lower case without its prefix ("stale_version", "busy",
// "no_free_pages", ...).
func Code(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	return strings.ToLower(strings.TrimPrefix(statusOf(err).Code.String(), "CODE_"))
}
