package tensor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
)

// Snapshot is a set of named tensors, 1-D int32 arrays and string metadata,
// serialized losslessly in the safetensors layout: an 8-byte little-endian
// header length, a JSON header (dtype, shape and byte offsets of every
// entry, plus "__metadata__"), then the raw little-endian data. Python's
// safetensors library can read a snapshot.
type Snapshot struct {
	// Metadata is stored as the header's "__metadata__" object.
	Metadata map[string]string
	// Tensors are stored with their dtype (F32, BF16, F16, F64) and shape.
	Tensors map[string]Tensor
	// Int32s are stored as 1-D I32 entries.
	Int32s map[string][]int32
}

// maxHeaderBytes bounds the JSON header a decoder accepts (safetensors uses
// the same 100 MB limit).
const maxHeaderBytes = 100 << 20

const metadataKey = "__metadata__"

type headerEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// MarshalBinary encodes the snapshot. Entries are laid out in name order, so
// equal snapshots encode to equal bytes.
func (s Snapshot) MarshalBinary() ([]byte, error) {
	names := make([]string, 0, len(s.Tensors)+len(s.Int32s))
	for name, t := range s.Tensors {
		if t.IsZero() {
			return nil, fmt.Errorf("%w: tensor %q is absent", ErrSnapshot, name)
		}
		names = append(names, name)
	}
	for name := range s.Int32s {
		if _, dup := s.Tensors[name]; dup {
			return nil, fmt.Errorf("%w: name %q is both a tensor and an int32 array", ErrSnapshot, name)
		}
		names = append(names, name)
	}
	if _, bad := s.Tensors[metadataKey]; bad {
		return nil, fmt.Errorf("%w: %q is reserved", ErrSnapshot, metadataKey)
	}
	if _, bad := s.Int32s[metadataKey]; bad {
		return nil, fmt.Errorf("%w: %q is reserved", ErrSnapshot, metadataKey)
	}
	sort.Strings(names)

	header := make(map[string]any, len(names)+1)
	if len(s.Metadata) > 0 {
		header[metadataKey] = s.Metadata
	}
	var off int64
	for _, name := range names {
		if t, ok := s.Tensors[name]; ok {
			n := int64(t.NumBytes())
			header[name] = headerEntry{t.dtype.SafetensorsName(), t.Shape(), [2]int64{off, off + n}}
			off += n
		} else {
			a := s.Int32s[name]
			n := int64(4 * len(a))
			header[name] = headerEntry{"I32", []int{len(a)}, [2]int64{off, off + n}}
			off += n
		}
	}
	hj, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	for len(hj)%8 != 0 { // align the data to 8 bytes, as safetensors writers do
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, name := range names {
		if t, ok := s.Tensors[name]; ok {
			out = append(out, t.Bytes()...)
		} else {
			for _, x := range s.Int32s[name] {
				out = binary.LittleEndian.AppendUint32(out, uint32(x))
			}
		}
	}
	return out, nil
}

// UnmarshalSnapshot decodes a snapshot. Any truncated, inconsistent or
// corrupt input gives an error wrapping ErrSnapshot; it never panics.
func UnmarshalSnapshot(data []byte) (Snapshot, error) {
	if len(data) < 8 {
		return Snapshot{}, fmt.Errorf("%w: %d bytes, shorter than the 8-byte header length", ErrSnapshot, len(data))
	}
	hlen := binary.LittleEndian.Uint64(data)
	if hlen > maxHeaderBytes || hlen > uint64(len(data)-8) {
		return Snapshot{}, fmt.Errorf("%w: header length %d exceeds the %d bytes that follow it", ErrSnapshot, hlen, len(data)-8)
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data[8 : 8+hlen]))
	if err := dec.Decode(&raw); err != nil {
		return Snapshot{}, fmt.Errorf("%w: header: %v", ErrSnapshot, err)
	}
	body := data[8+hlen:]
	s := Snapshot{Tensors: map[string]Tensor{}, Int32s: map[string][]int32{}}
	type span struct {
		name       string
		begin, end int64
	}
	spans := make([]span, 0, len(raw))
	// In name order, so that a bad file always gets the same error.
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		msg := raw[name]
		if name == metadataKey {
			if err := json.Unmarshal(msg, &s.Metadata); err != nil {
				return Snapshot{}, fmt.Errorf("%w: %s: %v", ErrSnapshot, metadataKey, err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return Snapshot{}, fmt.Errorf("%w: entry %q: %v", ErrSnapshot, name, err)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin || end > int64(len(body)) {
			return Snapshot{}, fmt.Errorf("%w: entry %q: data offsets [%d, %d) outside the %d data bytes", ErrSnapshot, name, begin, end, len(body))
		}
		n, err := numElements(e.Shape)
		if err != nil {
			return Snapshot{}, fmt.Errorf("%w: entry %q: %v", ErrSnapshot, name, err)
		}
		buf := body[begin:end]
		if e.DType == "I32" {
			if len(e.Shape) != 1 || int64(n)*4 != end-begin {
				return Snapshot{}, fmt.Errorf("%w: int32 entry %q: shape %v does not match %d bytes (want 1-D)", ErrSnapshot, name, e.Shape, end-begin)
			}
			a := make([]int32, n)
			for i := range a {
				a[i] = int32(binary.LittleEndian.Uint32(buf[4*i:]))
			}
			s.Int32s[name] = a
		} else {
			d, err := ParseDType(e.DType)
			if err != nil {
				return Snapshot{}, fmt.Errorf("%w: entry %q: %v", ErrSnapshot, name, err)
			}
			if int64(n)*int64(d.Size()) != end-begin {
				return Snapshot{}, fmt.Errorf("%w: entry %q: shape %v of %s needs %d bytes, offsets give %d", ErrSnapshot, name, e.Shape, d, int64(n)*int64(d.Size()), end-begin)
			}
			t, err := FromBytes(d, buf, e.Shape...)
			if err != nil {
				return Snapshot{}, fmt.Errorf("%w: entry %q: %v", ErrSnapshot, name, err)
			}
			s.Tensors[name] = t
		}
		spans = append(spans, span{name, begin, end})
	}
	// The data must be covered exactly, with no holes or overlaps.
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return int(min(max(a.begin-b.begin, -1), 1))
		}
		return int(min(max(a.end-b.end, -1), 1))
	})
	var at int64
	for _, sp := range spans {
		if sp.begin != at {
			return Snapshot{}, fmt.Errorf("%w: entry %q starts at byte %d, want %d (a hole or an overlap)", ErrSnapshot, sp.name, sp.begin, at)
		}
		at = sp.end
	}
	if at != int64(len(body)) {
		return Snapshot{}, fmt.Errorf("%w: entries cover %d of %d data bytes", ErrSnapshot, at, len(body))
	}
	return s, nil
}
