package rawjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// Compact returns a compacted copy of valid JSON; nil and null give nil.
// Invalid JSON is returned as a copy, unchanged (Check reports it).
func Compact(raw json.RawMessage) json.RawMessage {
	if raw == nil {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return slices.Clone(raw)
	}
	if b.String() == "null" {
		return nil
	}
	return b.Bytes()
}

// Check reports a raw value that is not valid JSON as an error wrapping
// sentinel that names the field: "<sentinel>: <name> is not valid JSON:
// <raw, quoted>". nil (absent) is valid.
func Check(sentinel error, name string, raw json.RawMessage) error {
	if raw != nil && !json.Valid(raw) {
		return fmt.Errorf("%w: %s is not valid JSON: %q", sentinel, name, raw)
	}
	return nil
}
