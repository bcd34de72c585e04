package paged

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// StepMetadata is the per-step input of the paged writes: EasyDeL's
// PagedAttentionMetadata (spec section 7.4), with its JSON field names.
//
// EasyDeL marks an absent part with rank-0 int32 scalars (1_000_000);
// kvmesh uses nil slices:
//   - the prefill part is present when PrefillPageTable is not nil; then
//     PrefillLength is meaningful and PrefillPosition may be nil, which
//     means the chunk starts at position 0 (EasyDeL's single-chunk case);
//   - the decode part is present when DecodesPosition is not nil; then
//     DecodesPageTable has one row per decode slot.
//
// In JSON an absent part is null; a bare number (EasyDeL's scalar
// sentinel) also decodes as absent. Round trips are lossless: an empty but
// present slice stays present.
type StepMetadata struct {
	// PrefillLength is the number of real tokens of the prefilling
	// sequence processed so far, this chunk included.
	PrefillLength int32 `json:"prefill_length"`
	// PrefillPosition holds the absolute positions of the chunk's T tokens
	// (padding included); nil means 0..T-1.
	PrefillPosition []int32 `json:"prefill_position"`
	// PrefillPageTable maps the sequence's logical pages to physical pages
	// (P entries).
	PrefillPageTable []int32 `json:"prefill_page_table"`
	// DecodesPosition holds, per decode slot, the position the slot's new
	// token is written at; -1 marks an inactive slot.
	DecodesPosition []int32 `json:"decodes_position"`
	// DecodesPageTable holds, per decode slot, its page table (Bd rows of
	// P entries).
	DecodesPageTable [][]int32 `json:"decodes_page_table"`
}

// InitEmptyStep returns a StepMetadata with every part absent, as
// EasyDeL's PagedAttentionMetadata.init_empty does. (The name differs from
// EasyDeL's because InitEmpty is the Cache constructor.)
func InitEmptyStep() StepMetadata { return StepMetadata{} }

// HasPrefill reports whether the prefill part is present.
func (m StepMetadata) HasPrefill() bool { return m.PrefillPageTable != nil }

// HasDecodes reports whether the decode part is present.
func (m StepMetadata) HasDecodes() bool { return m.DecodesPosition != nil }

// IsPrefillMode reports whether the decode part is absent. When both parts
// are absent, IsPrefillMode and IsDecodeMode are both true; callers treat
// that as prefill, as EasyDeL's do.
func (m StepMetadata) IsPrefillMode() bool { return !m.HasDecodes() }

// IsDecodeMode reports whether the prefill part is absent.
func (m StepMetadata) IsDecodeMode() bool { return !m.HasPrefill() }

// IsMixed reports whether both parts are present (a prefill chunk and
// decodes in one step).
func (m StepMetadata) IsMixed() bool { return m.HasPrefill() && m.HasDecodes() }

// Validate checks that the parts are consistent: PrefillPosition only with
// a page table, a non-negative PrefillLength, DecodesPosition and
// DecodesPageTable present together with one row per slot, and rows of one
// positive length. It does not check values against a pool; the writes do.
func (m StepMetadata) Validate() error {
	if m.PrefillPosition != nil && m.PrefillPageTable == nil {
		return fmt.Errorf("%w: prefill_position has %d entries but prefill_page_table is absent", ErrStep, len(m.PrefillPosition))
	}
	if m.HasPrefill() && m.PrefillLength < 0 {
		return fmt.Errorf("%w: prefill_length %d is negative", ErrStep, m.PrefillLength)
	}
	if (m.DecodesPosition == nil) != (m.DecodesPageTable == nil) {
		return fmt.Errorf("%w: decodes_position present=%t but decodes_page_table present=%t",
			ErrStep, m.DecodesPosition != nil, m.DecodesPageTable != nil)
	}
	if len(m.DecodesPageTable) != len(m.DecodesPosition) {
		return fmt.Errorf("%w: decodes_page_table has %d rows for %d decode slots", ErrStep, len(m.DecodesPageTable), len(m.DecodesPosition))
	}
	for b, row := range m.DecodesPageTable {
		if len(row) == 0 || len(row) != len(m.DecodesPageTable[0]) {
			return fmt.Errorf("%w: decodes_page_table row %d has %d entries, row 0 has %d (want equal, positive)",
				ErrStep, b, len(row), len(m.DecodesPageTable[0]))
		}
	}
	return nil
}

// UnmarshalJSON decodes the JSON form. An absent, null or scalar array
// field is an absent part.
func (m *StepMetadata) UnmarshalJSON(b []byte) error {
	var raw struct {
		PrefillLength    int32           `json:"prefill_length"`
		PrefillPosition  json.RawMessage `json:"prefill_position"`
		PrefillPageTable json.RawMessage `json:"prefill_page_table"`
		DecodesPosition  json.RawMessage `json:"decodes_position"`
		DecodesPageTable json.RawMessage `json:"decodes_page_table"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%w: %w", ErrStep, err)
	}
	out := StepMetadata{PrefillLength: raw.PrefillLength}
	for _, f := range []struct {
		name string
		msg  json.RawMessage
		dst  any
	}{
		{"prefill_position", raw.PrefillPosition, &out.PrefillPosition},
		{"prefill_page_table", raw.PrefillPageTable, &out.PrefillPageTable},
		{"decodes_position", raw.DecodesPosition, &out.DecodesPosition},
		{"decodes_page_table", raw.DecodesPageTable, &out.DecodesPageTable},
	} {
		msg := bytes.TrimSpace(f.msg)
		switch {
		case len(msg) == 0 || string(msg) == "null":
			continue // absent
		case msg[0] == '-' || (msg[0] >= '0' && msg[0] <= '9'):
			continue // EasyDeL's rank-0 sentinel: absent
		case msg[0] != '[':
			return fmt.Errorf("%w: %s is %.20s, want an array, null or a number", ErrStep, f.name, msg)
		}
		if err := json.Unmarshal(msg, f.dst); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrStep, f.name, err)
		}
	}
	*m = out
	return nil
}
