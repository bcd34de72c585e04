package sim

import (
	"bytes"
	"compress/gzip"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const goodLine = `{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1,2],"output_token_ids":[3]}`

func TestReadTraceMalformed(t *testing.T) {
	for name, tt := range map[string]struct {
		line  string
		field string
		msg   string
	}{
		"not json":         {`{"id":0,`, "", "not a JSON object"},
		"an array":         {`[1,2]`, "", "not a JSON object"},
		"trailing garbage": {goodLine + ` x`, "", "not a JSON object"},
		"missing id":       {`{"conversation":0,"turn":0,"prompt_token_ids":[1],"output_token_ids":[3]}`, "id", "missing"},
		"null turn":        {`{"id":0,"conversation":0,"turn":null,"prompt_token_ids":[1],"output_token_ids":[3]}`, "turn", "missing"},
		"string id":        {`{"id":"7","conversation":0,"turn":0,"prompt_token_ids":[1],"output_token_ids":[3]}`, "id", "string is not an integer"},
		"negative turn":    {`{"id":0,"conversation":0,"turn":-1,"prompt_token_ids":[1],"output_token_ids":[3]}`, "turn", "-1 is negative"},
		"fractional conv":  {`{"id":0,"conversation":1.5,"turn":0,"prompt_token_ids":[1],"output_token_ids":[3]}`, "conversation", "number 1.5 is not an integer"},
		"missing prompt":   {`{"id":0,"conversation":0,"turn":0,"output_token_ids":[3]}`, "prompt_token_ids", "missing"},
		"empty output":     {`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1],"output_token_ids":[]}`, "output_token_ids", "empty"},
		"prompt object":    {`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":{},"output_token_ids":[3]}`, "prompt_token_ids", "object is not an array of token ids"},
		"string token":     {`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1,"a"],"output_token_ids":[3]}`, "prompt_token_ids", "string is not a token id"},
		"token too large":  {`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1],"output_token_ids":[3,2147483648]}`, "output_token_ids", "number 2147483648 is not a token id"},
		"negative token":   {`{"id":0,"conversation":0,"turn":0,"prompt_token_ids":[1,-2],"output_token_ids":[3]}`, "prompt_token_ids", "token 1 is -2, want 0..2147483647"},
	} {
		t.Run(name, func(t *testing.T) {
			// The bad line is line 3, after a good line and a blank one.
			_, err := ReadTrace(strings.NewReader(goodLine + "\n\n" + tt.line + "\n" + goodLine + "\n"))
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrTrace)
			var le *LineError
			require.True(t, errors.As(err, &le), "%v", err)
			assert.Equal(t, 3, le.Line)
			assert.Equal(t, tt.field, le.Field)
			assert.Contains(t, le.Msg, tt.msg)
			assert.Contains(t, err.Error(), "line 3")
			if tt.field != "" {
				assert.Contains(t, err.Error(), `field "`+tt.field+`"`)
			}
		})
	}
	_, err := ReadTrace(strings.NewReader("\n  \n"))
	assert.ErrorIs(t, err, ErrTrace)
	assert.ErrorContains(t, err, "no requests")
	_, err = ReadTrace(bytes.NewReader([]byte{0x1f, 0x8b, 0, 1}))
	assert.ErrorIs(t, err, ErrTrace)
	assert.ErrorContains(t, err, "gzip")
}

// TestReadTraceRoundTrip writes generated traces and reads them back,
// plain and gzipped, with unknown fields and without a final newline.
func TestReadTraceRoundTrip(t *testing.T) {
	cfg := DefaultGenConfig()
	cfg.Conversations = 10
	reqs, err := Generate(cfg)
	require.NoError(t, err)
	var buf bytes.Buffer
	require.NoError(t, WriteTrace(&buf, reqs))
	assert.Equal(t, len(reqs), bytes.Count(buf.Bytes(), []byte("\n")))
	got, err := ReadTrace(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	assert.Equal(t, reqs, got)

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, err = zw.Write(buf.Bytes())
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	got, err = ReadTrace(&gz)
	require.NoError(t, err)
	assert.Equal(t, reqs, got)

	got, err = ReadTrace(strings.NewReader(`{"id":4,"conversation":2,"turn":1,"prompt_token_ids":[5],"output_token_ids":[6,7],"arrival":0.5}`))
	require.NoError(t, err)
	assert.Equal(t, []Request{{ID: 4, Conversation: 2, Turn: 1, Prompt: []int32{5}, Output: []int32{6, 7}}}, got)
}

// TestReadReferenceTrace checks the reference trace against the totals its
// README states: 463 requests, 398,678 prompt and 37,783 output tokens,
// vocabulary [0, 32000), 120 conversations.
func TestReadReferenceTrace(t *testing.T) {
	reqs := loadReference(t)
	require.Len(t, reqs, 463)
	var prompt, output int
	convs := map[int]bool{}
	for _, q := range reqs {
		prompt += len(q.Prompt)
		output += len(q.Output)
		convs[q.Conversation] = true
		for _, tok := range append(q.Prompt[:len(q.Prompt):len(q.Prompt)], q.Output...) {
			require.Less(t, tok, int32(32000))
		}
	}
	assert.Equal(t, 398678, prompt)
	assert.Equal(t, 37783, output)
	assert.Len(t, convs, 120)

	_, err := ReadTraceFile(filepath.Join(traceDir, "missing.jsonl"))
	assert.ErrorContains(t, err, "missing.jsonl")
}

// FuzzReadTrace checks that ReadTrace never panics, and that what it
// accepts writes back to a trace it reads the same.
func FuzzReadTrace(f *testing.F) {
	f.Add([]byte(goodLine + "\n" + goodLine))
	f.Add([]byte(`{"id":1,"conversation":0,"turn":0,"prompt_token_ids":[1,2,"x"],"output_token_ids":[3]}`))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, err := ReadTrace(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		require.NoError(t, WriteTrace(&buf, reqs))
		again, err := ReadTrace(&buf)
		require.NoError(t, err)
		require.Equal(t, reqs, again)
	})
}
