package sim

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
)

// Request is one request of a trace: a prompt and the tokens the model
// generated for it.
type Request struct {
	// ID identifies the request (reported, never interpreted).
	ID int `json:"id"`
	// Conversation and Turn (0-based) place it in a multi-turn chat
	// (reported, never interpreted: the prefix cache finds the sharing
	// from the tokens).
	Conversation int `json:"conversation"`
	Turn         int `json:"turn"`
	// Prompt is the prompt's token ids; at least one.
	Prompt []int32 `json:"prompt_token_ids"`
	// Output is the generated token ids; at least one.
	Output []int32 `json:"output_token_ids"`
}

// LineError is a malformed trace line: its 1-based number, the field at
// fault (empty when the line is not a JSON object) and what is wrong. It
// wraps ErrTrace.
type LineError struct {
	Line  int
	Field string
	Msg   string
}

// Error returns "sim: bad trace: line L: field "F": MSG".
func (e *LineError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%v: line %d: %s", ErrTrace, e.Line, e.Msg)
	}
	return fmt.Sprintf("%v: line %d: field %q: %s", ErrTrace, e.Line, e.Field, e.Msg)
}

// Unwrap returns ErrTrace.
func (e *LineError) Unwrap() error { return ErrTrace }

// wireRequest is a trace line as decoded: pointers tell a missing field
// from a zero one.
type wireRequest struct {
	ID           *int     `json:"id"`
	Conversation *int     `json:"conversation"`
	Turn         *int     `json:"turn"`
	Prompt       *[]int32 `json:"prompt_token_ids"`
	Output       *[]int32 `json:"output_token_ids"`
}

// ReadTrace reads a trace: one JSON object per line, in trace order, with
// the fields of Request, all required ("id", "conversation", "turn" are
// non-negative integers; "prompt_token_ids" and "output_token_ids" are
// non-empty arrays of token ids in 0..2^31-1). Other fields are ignored;
// blank lines are skipped. A gzip-compressed trace is recognised by its
// magic bytes and decompressed.
//
// A malformed line is a *LineError naming the line and the field; an
// empty trace is an error wrapping ErrTrace; read errors are returned as
// they are.
func ReadTrace(r io.Reader) ([]Request, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %w", ErrTrace, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 1<<16)
	}
	var reqs []Request
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			q, lerr := parseLine(line, b)
			if lerr != nil {
				return nil, lerr
			}
			reqs = append(reqs, q)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("sim: reading trace line %d: %w", line, err)
		}
	}
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: no requests", ErrTrace)
	}
	return reqs, nil
}

// ReadTraceFile reads the trace in file path (see ReadTrace); errors name
// the file.
func ReadTraceFile(path string) ([]Request, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	reqs, err := ReadTrace(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return reqs, nil
}

// parseLine decodes and checks one non-blank trace line.
func parseLine(line int, b []byte) (Request, error) {
	var w wireRequest
	if err := json.Unmarshal(b, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Request{}, &LineError{line, te.Field, fmt.Sprintf("%s is not %s", te.Value, describe(te.Type))}
		}
		return Request{}, &LineError{line, "", fmt.Sprintf("not a JSON object: %v", err)}
	}
	var q Request
	for _, f := range []struct {
		name string
		src  *int
		dst  *int
	}{{"id", w.ID, &q.ID}, {"conversation", w.Conversation, &q.Conversation}, {"turn", w.Turn, &q.Turn}} {
		switch {
		case f.src == nil:
			return Request{}, &LineError{line, f.name, "missing"}
		case *f.src < 0:
			return Request{}, &LineError{line, f.name, fmt.Sprintf("%d is negative", *f.src)}
		}
		*f.dst = *f.src
	}
	for _, f := range []struct {
		name string
		src  *[]int32
		dst  *[]int32
	}{{"prompt_token_ids", w.Prompt, &q.Prompt}, {"output_token_ids", w.Output, &q.Output}} {
		switch {
		case f.src == nil:
			return Request{}, &LineError{line, f.name, "missing"}
		case len(*f.src) == 0:
			return Request{}, &LineError{line, f.name, "empty, want at least one token id"}
		}
		for i, t := range *f.src {
			if t < 0 {
				return Request{}, &LineError{line, f.name, fmt.Sprintf("token %d is %d, want 0..%d", i, t, math.MaxInt32)}
			}
		}
		*f.dst = *f.src
	}
	return q, nil
}

// describe names the JSON value a Go type of wireRequest takes.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int:
		return "an integer"
	case reflect.Int32:
		return fmt.Sprintf("a token id (an integer in 0..%d)", math.MaxInt32)
	case reflect.Slice:
		return "an array of token ids"
	}
	return "a " + t.String()
}

// WriteTrace writes reqs in the format ReadTrace reads, one line each.
func WriteTrace(w io.Writer, reqs []Request) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	for _, q := range reqs {
		if err := enc.Encode(q); err != nil {
			return err
		}
	}
	return bw.Flush()
}
