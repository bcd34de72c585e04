package parity

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// ErrCase reports a case file that cannot be run: malformed JSON, an unknown
// case kind, a missing tensor or config field, or inconsistent shapes. The
// message names the file and the field.
var ErrCase = errors.New("parity: bad case file")

// rawTensor is a tensor of a case file: row-major data with named axes.
type rawTensor struct {
	Shape []int     `json:"shape"`
	Axes  []string  `json:"axes"`
	Data  []float64 `json:"data"`
}

// caseFile is a parsed case file (schema in golden/README.md).
type caseFile struct {
	file   string
	Kind   string                          `json:"case"`
	Config map[string]json.RawMessage      `json:"config"`
	Inputs map[string]rawTensor            `json:"inputs"`
	Out    map[string]map[string]rawTensor `json:"-"`
	Out64  map[string]rawTensor            `json:"outputs_float64"`
	Out32  map[string]rawTensor            `json:"outputs_float32"`
}

func parseCase(file string, data []byte) (*caseFile, error) {
	var c caseFile
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCase, file, err)
	}
	c.file = file
	if c.Kind == "" {
		return nil, fmt.Errorf("%w: %s: field \"case\" is missing", ErrCase, file)
	}
	if c.Inputs == nil || c.Out64 == nil || c.Out32 == nil {
		return nil, fmt.Errorf("%w: %s: needs \"inputs\", \"outputs_float64\" and \"outputs_float32\"", ErrCase, file)
	}
	return &c, nil
}

func (c *caseFile) errorf(format string, a ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrCase, c.file, fmt.Sprintf(format, a...))
}

// configInt returns config[key] as an integer.
func (c *caseFile) configInt(key string) (int, error) {
	raw, ok := c.Config[key]
	if !ok {
		return 0, c.errorf("config.%s is missing", key)
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f != math.Trunc(f) {
		return 0, c.errorf("config.%s is %s, want an integer", key, raw)
	}
	return int(f), nil
}

// configFloat returns config[key] as a number, or def when it is absent.
func (c *caseFile) configFloat(key string, def float64) (float64, error) {
	raw, ok := c.Config[key]
	if !ok {
		return def, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return 0, c.errorf("config.%s is %s, want a number", key, raw)
	}
	return f, nil
}

// splits returns config.prefill_splits, each in [1, seqlen].
func (c *caseFile) splits(seqlen int) ([]int, error) {
	raw, ok := c.Config["prefill_splits"]
	if !ok {
		return nil, nil
	}
	var s []int
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, c.errorf("config.prefill_splits is %s, want a list of integers", raw)
	}
	for _, p := range s {
		if p < 1 || p > seqlen {
			return nil, c.errorf("config.prefill_splits has %d, want 1..%d (the sequence length)", p, seqlen)
		}
	}
	return s, nil
}

// get returns the tensor section.name laid out in the given axis order: the
// file's axes must be the same names, in any order.
func (c *caseFile) get(section string, from map[string]rawTensor, name string, axes ...string) ([]float64, []int, error) {
	r, ok := from[name]
	if !ok {
		return nil, nil, c.errorf("%s.%s is missing", section, name)
	}
	if len(r.Shape) != len(r.Axes) {
		return nil, nil, c.errorf("%s.%s has %d axes for shape %v", section, name, len(r.Axes), r.Shape)
	}
	n := 1
	for _, d := range r.Shape {
		if d < 0 {
			return nil, nil, c.errorf("%s.%s has a negative dimension in shape %v", section, name, r.Shape)
		}
		n *= d
	}
	if n != len(r.Data) {
		return nil, nil, c.errorf("%s.%s has %d values for shape %v (want %d)", section, name, len(r.Data), r.Shape, n)
	}
	perm := make([]int, len(axes))
	for i, a := range axes {
		perm[i] = slices.Index(r.Axes, a)
	}
	if len(axes) != len(r.Axes) || slices.Contains(perm, -1) {
		return nil, nil, c.errorf("%s.%s has axes %q, want %q", section, name, r.Axes, axes)
	}
	return permute(r.Data, r.Shape, perm)
}

// permute lays data of shape out with axis i of the result taken from axis
// perm[i] of the input.
func permute(data []float64, shape, perm []int) ([]float64, []int, error) {
	out := make([]float64, len(data))
	oshape := make([]int, len(perm))
	strides := make([]int, len(shape))
	s := 1
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = s
		s *= shape[i]
	}
	for i, p := range perm {
		oshape[i] = shape[p]
	}
	idx := make([]int, len(perm))
	for k := range out {
		src := 0
		for i, x := range idx {
			src += x * strides[perm[i]]
		}
		out[k] = data[src]
		for i := len(idx) - 1; i >= 0; i-- {
			if idx[i]++; idx[i] < oshape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return out, oshape, nil
}

// input returns inputs.name as a tensor of dtype prec (the float32 run
// rounds the float64 inputs), laid out in the given axis order.
func (c *caseFile) input(prec tensor.DType, name string, axes ...string) (tensor.Tensor, error) {
	data, shape, err := c.get("inputs", c.Inputs, name, axes...)
	if err != nil {
		return tensor.Tensor{}, err
	}
	return tensor.FromFloat64s(prec, data, shape...)
}

// output returns the reference output name of the run in precision prec.
func (c *caseFile) output(prec tensor.DType, name string, axes ...string) ([]float64, []int, error) {
	if prec == tensor.Float64 {
		return c.get("outputs_float64", c.Out64, name, axes...)
	}
	return c.get("outputs_float32", c.Out32, name, axes...)
}

// dim checks that a tensor's dimension agrees with a size found elsewhere.
func (c *caseFile) dim(name string, t tensor.Tensor, axis int, want int, what string) error {
	if got := t.Dim(axis); got != want {
		return c.errorf("inputs.%s has %d along axis %d, but %s is %d", name, got, axis, what, want)
	}
	return nil
}
