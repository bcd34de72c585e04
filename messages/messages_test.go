package messages

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Every reply carries a Status as field 1: a Go error never crosses an
// actor boundary, so a reply without one could not report a failure.
func TestEveryReplyCarriesStatus(t *testing.T) {
	msgs := File_kvmesh_proto.Messages()
	replies := 0
	for i := range msgs.Len() {
		m := msgs.Get(i)
		if !strings.HasSuffix(string(m.Name()), "Reply") {
			continue
		}
		replies++
		f := m.Fields().ByNumber(1)
		require.NotNil(t, f, "%s has no field 1", m.Name())
		assert.Equal(t, "status", string(f.Name()), m.Name())
		assert.Equal(t, protoreflect.FullName("kvmesh.v1.Status"), f.Message().FullName(), m.Name())
	}
	assert.GreaterOrEqual(t, replies, 9)
	assert.Equal(t, protoreflect.FullName("kvmesh.v1"), File_kvmesh_proto.Package())
}

// The zero Code is OK, so an unset status means success and every other
// code has a distinct name.
func TestCodes(t *testing.T) {
	assert.Equal(t, "CODE_OK", Code(0).String())
	seen := map[string]bool{}
	for n := range Code_name {
		name := Code(n).String()
		assert.False(t, seen[name], name)
		seen[name] = true
	}
	assert.Contains(t, seen, "CODE_STALE_VERSION")
	assert.Contains(t, seen, "CODE_STATE_LOST")
}

func TestStepWriteRoundTrip(t *testing.T) {
	in := &StepWrite{CacheId: "c1", BaseVersion: 7, Writes: []*LayerWrite{{
		Layer: 3,
		Write: &LayerWrite_Paged{Paged: &PagedWrite{
			DecodeKey: &Tensor{Dtype: DType_DTYPE_BFLOAT16, Shape: []int64{2, 4, 8}, Data: make([]byte, 128)},
			Step:      &PagedStep{HasDecodes: true, DecodesPosition: []int32{5, -1}, DecodesPageTable: []*PageTableRow{{Pages: []int32{3, 7}}, {Pages: []int32{0, 0}}}},
		}},
	}}}
	b, err := proto.Marshal(in)
	require.NoError(t, err)
	var out StepWrite
	require.NoError(t, proto.Unmarshal(b, &out))
	assert.True(t, proto.Equal(in, &out))
	assert.Equal(t, []int32{5, -1}, out.GetWrites()[0].GetPaged().GetStep().GetDecodesPosition())
}
