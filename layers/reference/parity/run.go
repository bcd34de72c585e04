package parity

import (
	"embed"
	"fmt"
	"io/fs"
	"math"
	"path"
	"sort"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

//go:embed golden/*.json golden/README.md golden/PROVENANCE.md
var golden embed.FS

// GoldenFiles lists the six embedded golden case files.
func GoldenFiles() []string {
	names, _ := fs.Glob(golden, "golden/*.json")
	var out []string
	for _, n := range names {
		if path.Base(n) != "agreement_summary.json" {
			out = append(out, n)
		}
	}
	return out
}

// Golden returns the bytes of an embedded golden file named by GoldenFiles.
func Golden(name string) ([]byte, error) { return golden.ReadFile(name) }

// Options are the tolerances of a run, and the cache storage of a
// KV-storage run.
type Options struct {
	// Tol64 bounds the max abs difference against outputs_float64 (default 1e-12).
	Tol64 float64
	// Tol32 bounds the max abs difference against outputs_float32 (default 1e-5).
	Tol32 float64
	// KV, when set, makes Run a KV-storage run: attention cases run once,
	// the attention math in float64 and both caches storing keys and
	// values as KV says, and every output and final cache is compared with
	// outputs_float64 within TolKV (Check.Diff64; Diff32 is NaN). Other
	// case kinds hold no KV cache: their Result is Skipped. The zero KV
	// gives the default runs in float64 and float32.
	KV KVStorage
	// TolKV bounds the differences of a KV-storage run; 0 means
	// KV.Tolerance.
	TolKV float64
}

func (o Options) withDefaults() Options {
	if o.Tol64 == 0 {
		o.Tol64 = 1e-12
	}
	if o.Tol32 == 0 {
		o.Tol32 = 1e-5
	}
	if o.TolKV == 0 {
		o.TolKV = o.KV.Tolerance
	}
	return o
}

// Check is one compared output of one schedule: its name (schedule/path/
// output), the reference output it is compared with, and the max abs
// differences of the float64 and float32 runs (NaN for a run that was not
// made, such as the float32 run of a KV-storage run).
type Check struct {
	Name           string
	Reference      string
	Diff64, Diff32 float64
	OK             bool
}

// Result is a case file's checks, in a stable order. Skipped, when set,
// says why a KV-storage run did not run the case (it has no checks).
type Result struct {
	File, Case string
	Checks     []Check
	Skipped    string
}

// OK reports whether every check is within tolerance.
func (r Result) OK() bool {
	for _, c := range r.Checks {
		if !c.OK {
			return false
		}
	}
	return true
}

// observation is one output a run produced, to compare with reference
// output ref laid out in axes. When rows is set, got holds only those
// entries of the reference's first axis (states recorded after some tokens).
type observation struct {
	check, ref string
	axes       []string
	rows       []int
	got        []float64
}

// runner runs a case in one precision.
type runner func(c *caseFile, prec tensor.DType) ([]observation, error)

var runners = map[string]runner{
	"attention_gqa": runAttention,
	"mamba1_inner":  runMamba1,
	"mamba1_module": runMamba1,
	"mamba2_inner":  runMamba2,
	"mamba2_module": runMamba2,
	"lightning":     runLightning,
}

// Run parses a case file and runs it in float64 and float32, or, when
// opt.KV is set, once through caches of that storage (see Options.KV). A
// file that cannot be run (see ErrCase) is an error; a difference above
// tolerance is not: it is a Check with OK false.
func Run(file string, data []byte, opt Options) (Result, error) {
	opt = opt.withDefaults()
	c, err := parseCase(file, data)
	if err != nil {
		return Result{}, err
	}
	run, ok := runners[c.Kind]
	if !ok {
		kinds := make([]string, 0, len(runners))
		for k := range runners {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		return Result{}, c.errorf("unknown case kind %q (want one of %v)", c.Kind, kinds)
	}
	if !opt.KV.IsZero() {
		return runKV(c, opt.KV, opt.TolKV)
	}
	res := Result{File: file, Case: c.Kind}
	index := map[string]int{}
	for _, prec := range []tensor.DType{tensor.Float64, tensor.Float32} {
		obs, err := run(c, prec)
		if err != nil {
			return Result{}, err
		}
		for _, o := range obs {
			d, err := c.diff(prec, o)
			if err != nil {
				return Result{}, err
			}
			i, seen := index[o.check]
			if !seen {
				i = len(res.Checks)
				index[o.check] = i
				res.Checks = append(res.Checks, Check{Name: o.check, Reference: o.ref, Diff64: nanValue(), Diff32: nanValue()})
			}
			if prec == tensor.Float64 {
				res.Checks[i].Diff64 = d
			} else {
				res.Checks[i].Diff32 = d
			}
		}
	}
	for i := range res.Checks {
		ch := &res.Checks[i]
		ch.OK = ch.Diff64 <= opt.Tol64 && ch.Diff32 <= opt.Tol32 // NaN (missing or not a number) fails
	}
	return res, nil
}

// diff returns the max abs difference between an observation and its
// reference output; NaN anywhere counts as +Inf.
func (c *caseFile) diff(prec tensor.DType, o observation) (float64, error) {
	want, shape, err := c.output(prec, o.ref, o.axes...)
	if err != nil {
		return 0, err
	}
	if o.rows != nil {
		per := 1
		for _, d := range shape[1:] {
			per *= d
		}
		sel := make([]float64, 0, len(o.rows)*per)
		for _, r := range o.rows {
			if r < 0 || r >= shape[0] {
				return 0, c.errorf("%s has %d entries along %s, the run needs entry %d", o.ref, shape[0], o.axes[0], r)
			}
			sel = append(sel, want[r*per:(r+1)*per]...)
		}
		want = sel
	}
	if len(want) != len(o.got) {
		return 0, c.errorf("%s has %d values (shape %v), the run produced %d", o.ref, len(want), shape, len(o.got))
	}
	d := 0.0
	for i := range want {
		x := math.Abs(want[i] - o.got[i])
		if math.IsNaN(x) {
			return math.Inf(1), nil
		}
		d = max(d, x)
	}
	return d, nil
}

// schedule is a way of feeding a sequence: chunk lengths in order.
type schedule struct {
	name   string
	chunks []int
}

// schedules returns token-by-token and, for each prefill split P, a P-token
// prefill followed by single-token steps.
func schedules(t int, splits []int) []schedule {
	ones := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = 1
		}
		return out
	}
	out := []schedule{{"step", ones(t)}}
	for _, p := range splits {
		out = append(out, schedule{fmt.Sprintf("prefill%d", p), append([]int{p}, ones(t-p)...)})
	}
	return out
}

// sliceTokens returns tokens [s, s+n) along axis 1 of a (B, T, ...) tensor.
func sliceTokens(t tensor.Tensor, s, n int) tensor.Tensor {
	shape := t.Shape()
	per := t.Len() / (shape[0] * shape[1])
	all := t.Float64s()
	out := make([]float64, 0, shape[0]*n*per)
	for b := range shape[0] {
		out = append(out, all[(b*shape[1]+s)*per:(b*shape[1]+s+n)*per]...)
	}
	shape[1] = n
	return tensor.Must(tensor.FromFloat64s(t.DType(), out, shape...))
}

// tokenSeq gathers per-chunk outputs (B, n, ...) into one (B, T, ...) array.
type tokenSeq struct {
	b, t, per int
	data      []float64
}

func newTokenSeq(b, t, per int) *tokenSeq {
	return &tokenSeq{b: b, t: t, per: per, data: make([]float64, b*t*per)}
}

func (q *tokenSeq) put(s int, chunk tensor.Tensor) {
	n := chunk.Dim(1)
	vals := chunk.Float64s()
	for b := range q.b {
		copy(q.data[(b*q.t+s)*q.per:(b*q.t+s+n)*q.per], vals[b*n*q.per:(b+1)*n*q.per])
	}
}

// nanValue is the difference of a run that was not made.
func nanValue() float64 { return math.NaN() }
