package tensor

import (
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sampleSnapshot(t *testing.T) Snapshot {
	chunked := Must(NewChunked(BFloat16, 4, 2, 4))
	e := chunked.Edit()
	require.NoError(t, e.Write(4, Must(FromFloat64s(Float32, []float64{1, 2, 3, 4}, 4)), 0, 4))
	return Snapshot{
		Metadata: map[string]string{"kind": "test", "layer": "3"},
		Tensors: map[string]Tensor{
			"a": randomTensor(t, Float32, 1, 2, 3),
			"b": randomTensor(t, Float16, 2, 5),
			"c": e.Tensor(),
			"d": randomTensor(t, Float64, 3, 1, 1, 2),
		},
		Int32s: map[string][]int32{"index": {0, 7, -1}, "empty": {}},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := sampleSnapshot(t)
	b, err := s.MarshalBinary()
	require.NoError(t, err)
	got, err := UnmarshalSnapshot(b)
	require.NoError(t, err)
	assert.Equal(t, s.Metadata, got.Metadata)
	assert.Equal(t, s.Int32s, got.Int32s)
	require.Len(t, got.Tensors, len(s.Tensors))
	for name, want := range s.Tensors {
		assert.True(t, want.Equal(got.Tensors[name]), name)
	}
	again, err := got.MarshalBinary()
	require.NoError(t, err)
	assert.Equal(t, b, again, "encoding is deterministic")
}

func TestSnapshotLayoutIsSafetensors(t *testing.T) {
	s := Snapshot{Tensors: map[string]Tensor{"x": Must(FromFloat64s(Float32, []float64{1.5, -2}, 2))}}
	b, err := s.MarshalBinary()
	require.NoError(t, err)
	n := binary.LittleEndian.Uint64(b)
	assert.Zero(t, n%8, "header padded to 8 bytes")
	var header map[string]struct {
		DType       string  `json:"dtype"`
		Shape       []int   `json:"shape"`
		DataOffsets []int64 `json:"data_offsets"`
	}
	require.NoError(t, json.Unmarshal(b[8:8+n], &header))
	assert.Equal(t, "F32", header["x"].DType)
	assert.Equal(t, []int{2}, header["x"].Shape)
	assert.Equal(t, []int64{0, 8}, header["x"].DataOffsets)
	assert.Equal(t, []byte{0, 0, 0xc0, 0x3f, 0, 0, 0, 0xc0}, b[8+n:])
}

func TestSnapshotRejectsCorruptInput(t *testing.T) {
	good, err := sampleSnapshot(t).MarshalBinary()
	require.NoError(t, err)
	hlen := binary.LittleEndian.Uint64(good)
	withHeader := func(h string) []byte {
		for len(h)%8 != 0 {
			h += " "
		}
		out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
		return append(append(out, h...), make([]byte, 8)...)
	}
	for name, data := range map[string][]byte{
		"empty":            nil,
		"short":            good[:5],
		"truncated header": good[:8+hlen/2],
		"truncated data":   good[:len(good)-1],
		"extra data":       append(append([]byte{}, good...), 0),
		"huge header":      binary.LittleEndian.AppendUint64(nil, 1<<62),
		"not json":         withHeader("{nope"),
		"bad dtype":        withHeader(`{"x":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}}`),
		"size mismatch":    withHeader(`{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`),
		"negative shape":   withHeader(`{"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`),
		"offsets outside":  withHeader(`{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}`),
		"reversed offsets": withHeader(`{"x":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`),
		"overlap":          withHeader(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`),
		"hole":             withHeader(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`),
		"2-D int32":        withHeader(`{"x":{"dtype":"I32","shape":[1,2],"data_offsets":[0,8]}}`),
		"bad metadata":     withHeader(`{"__metadata__":{"a":1},"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := UnmarshalSnapshot(data)
			require.ErrorIs(t, err, ErrSnapshot)
		})
	}
}

// A file with several bad entries is refused with the same error every
// time: the entry first in name order, whatever Go's map order.
func TestSnapshotErrorIsDeterministic(t *testing.T) {
	h := `{"z":{"dtype":"F32","shape":[2],"data_offsets":[0,64]},"m":{"dtype":"F32","shape":[2],"data_offsets":[0,64]},` +
		`"b":{"dtype":"F32","shape":[2],"data_offsets":[0,64]},"q":{"dtype":"F32","shape":[2],"data_offsets":[0,64]}}`
	for len(h)%8 != 0 {
		h += " "
	}
	data := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	data = append(data, make([]byte, 8)...)
	for range 20 {
		_, err := UnmarshalSnapshot(data)
		require.ErrorIs(t, err, ErrSnapshot)
		require.Contains(t, err.Error(), `entry "b": data offsets [0, 64) outside the 8 data bytes`)
	}
}

func TestSnapshotMarshalErrors(t *testing.T) {
	_, err := Snapshot{Tensors: map[string]Tensor{"x": {}}}.MarshalBinary()
	require.ErrorIs(t, err, ErrSnapshot)
	_, err = Snapshot{Tensors: map[string]Tensor{"x": Must(New(Float32, 1))}, Int32s: map[string][]int32{"x": {1}}}.MarshalBinary()
	require.ErrorIs(t, err, ErrSnapshot)
	assert.Contains(t, err.Error(), `"x"`)
}

func FuzzUnmarshalSnapshot(f *testing.F) {
	s := Snapshot{
		Metadata: map[string]string{"k": "v"},
		Tensors:  map[string]Tensor{"a": Must(FromFloat64s(BFloat16, []float64{1, 2, 3}, 3))},
		Int32s:   map[string][]int32{"i": {4, 5}},
	}
	good, err := s.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := UnmarshalSnapshot(data)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same entries.
		b, err := got.MarshalBinary()
		require.NoError(t, err)
		again, err := UnmarshalSnapshot(b)
		require.NoError(t, err)
		require.Equal(t, len(got.Tensors), len(again.Tensors))
		for name, x := range got.Tensors {
			require.True(t, x.Equal(again.Tensors[name]), name)
		}
		require.Equal(t, len(got.Int32s), len(again.Int32s))
	})
}
