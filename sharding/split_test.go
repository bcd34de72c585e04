package sharding

import (
	"bytes"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"testing"
	"testing/quick"

	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// splitCase is a random tensor, mesh and corrected spec for the property
// tests.
type splitCase struct {
	mesh  Mesh
	spec  Spec
	x     tensor.Tensor
	raw   []byte // x's bytes, row-major
	asked Spec   // the spec before Correct
}

func (c splitCase) String() string {
	return fmt.Sprintf("%s %s spec %s (asked %s)", c.mesh, c.x, c.spec, c.asked)
}

var dtypes = []tensor.DType{tensor.Float32, tensor.BFloat16, tensor.Float16, tensor.Float64}

// Generate builds a random case: 0 to 5 mesh axes with sizes 1..3 in a
// random order (at most 36 devices); a tensor of rank 0..4 whose
// dimensions are mostly 4, 6 or 12, in a random dtype, with random bytes
// and sometimes chunked storage; a spec that gives each mesh axis (and
// sometimes one axis the mesh lacks) to at most one tensor axis, then
// Correct.
func (splitCase) Generate(r *rand.Rand, _ int) reflect.Value {
	names := DefaultAxisOrder()
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	names = names[:r.Intn(len(names)+1)]
	sizes := map[string]int{}
	n := 1
	for _, a := range names {
		s := []int{1, 2, 2, 3}[r.Intn(4)]
		if n*s > 36 {
			s = 1
		}
		sizes[a] = s
		n *= s
	}
	var order []string
	if r.Intn(2) == 0 {
		order = slices.Clone(names) // the shuffled order
	}
	devs := make([]Device, n)
	for i, id := range r.Perm(n) {
		devs[i] = Device{ID: 100 + id, MemoryBytes: 1 << 20}
	}
	m, err := NewMesh(MeshConfig{Sizes: sizes, Order: order, Devices: devs})
	if err != nil {
		panic(err)
	}

	rank := 1 + r.Intn(4)
	if r.Intn(10) == 0 {
		rank = 0
	}
	shape := make([]int, rank)
	for d := range shape {
		if r.Intn(5) == 0 {
			shape[d] = r.Intn(7) // often not divisible, sometimes 0
		} else {
			shape[d] = []int{4, 6, 12}[r.Intn(3)] // divisible by most shard counts
		}
	}
	asked := make(Spec, rank+r.Intn(2)) // sometimes longer than the rank
	pool := slices.Clone(names)
	if r.Intn(4) == 0 { // an axis the mesh lacks
		if a := []string{"xp", DP, FSDP, TP, SP, EP}[r.Intn(6)]; !slices.Contains(pool, a) {
			pool = append(pool, a)
		}
	}
	r.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	for _, a := range pool {
		if len(asked) > 0 && r.Intn(3) > 0 {
			d := r.Intn(len(asked))
			asked[d] = append(asked[d], a)
		}
	}
	spec := Correct(asked, shape, m)

	dt := dtypes[r.Intn(len(dtypes))]
	count := 1
	for _, d := range shape {
		count *= d
	}
	raw := make([]byte, count*dt.Size())
	r.Read(raw)
	x, err := tensor.FromBytes(dt, raw, shape...)
	if err != nil {
		panic(err)
	}
	if count > 1 && r.Intn(2) == 0 {
		// Chunked storage: a chunk length that divides the element count.
		divs := []int{}
		for c := 1; c < count; c++ {
			if count%c == 0 {
				divs = append(divs, c)
			}
		}
		cl := divs[r.Intn(len(divs))]
		y, err := tensor.NewChunked(dt, cl, shape...)
		if err != nil {
			panic(err)
		}
		ed := y.Edit()
		if err := ed.Write(0, x, 0, count); err != nil {
			panic(err)
		}
		x = ed.Tensor()
	}
	return reflect.ValueOf(splitCase{mesh: m, spec: spec, x: x, raw: raw, asked: asked})
}

var quickConfig = &quick.Config{MaxCount: 1000}

// TestPropertySplitJoinRoundTrip: Join(Split(x)) == x bytewise, for every
// dtype, mesh and corrected spec.
func TestPropertySplitJoinRoundTrip(t *testing.T) {
	f := func(c splitCase) bool {
		parts, err := Split(c.x, c.spec, c.mesh)
		if err != nil {
			t.Logf("%s: split: %v", c, err)
			return false
		}
		y, err := Join(parts, c.spec, c.mesh, c.x.Shape())
		if err != nil {
			t.Logf("%s: join: %v", c, err)
			return false
		}
		if !y.HasShape(c.x.Shape()...) || y.DType() != c.x.DType() || !bytes.Equal(y.Bytes(), c.raw) {
			t.Logf("%s: round trip differs", c)
			return false
		}
		return true
	}
	require.NoError(t, quick.Check(f, quickConfig))
}

// TestPropertySlicesTile: the primaries' slices cover every element
// exactly once, replicas hold their primary's ranges, and each part
// holds exactly its slice's elements.
func TestPropertySlicesTile(t *testing.T) {
	f := func(c splitCase) bool {
		shape := c.x.Shape()
		sl, err := ShardSlices(shape, c.spec, c.mesh)
		if err != nil {
			t.Logf("%s: %v", c, err)
			return false
		}
		parts, err := Split(c.x, c.spec, c.mesh)
		if err != nil {
			t.Logf("%s: %v", c, err)
			return false
		}
		strides := rowMajorStrides(shape)
		cover := make([]int, c.x.Len())
		es := c.x.DType().Size()
		shards := map[int]bool{}
		replicas := 0
		for i, s := range sl {
			if s.Index != i || s.Device != c.mesh.Device(i) || len(s.Ranges) != len(shape) {
				t.Logf("%s: slice %d: bad index, device or rank: %+v", c, i, s)
				return false
			}
			p := sl[s.Primary]
			if p.Replica != 0 || p.Shard != s.Shard || !slices.Equal(p.Ranges, s.Ranges) || s.Primary > i {
				t.Logf("%s: slice %d: primary %d does not match", c, i, s.Primary)
				return false
			}
			if s.Replica == 0 && s.Primary != i {
				t.Logf("%s: slice %d: replica 0 is not its own primary", c, i)
				return false
			}
			if s.Replica > replicas {
				replicas = s.Replica
			}
			// The part holds exactly the slice's elements, in order.
			want := gather(c.raw, es, strides, s.Ranges)
			if !parts[i].HasShape(s.Shape()...) || !bytes.Equal(parts[i].Bytes(), want) {
				t.Logf("%s: part %d differs from its slice %v", c, i, s.Ranges)
				return false
			}
			if s.Replica != 0 {
				continue
			}
			if shards[s.Shard] {
				t.Logf("%s: shard %d has two primaries", c, s.Shard)
				return false
			}
			shards[s.Shard] = true
			forEach(s.Ranges, func(idx []int) {
				off := 0
				for d, x := range idx {
					off += x * strides[d]
				}
				cover[off]++
			})
		}
		for off, n := range cover {
			if n != 1 {
				t.Logf("%s: element %d covered %d times", c, off, n)
				return false
			}
		}
		if len(shards)*(replicas+1) != c.mesh.NumDevices() {
			t.Logf("%s: %d shards x %d replicas != %d devices", c, len(shards), replicas+1, c.mesh.NumDevices())
			return false
		}
		for s := range shards {
			if s < 0 || s >= len(shards) {
				t.Logf("%s: shard id %d outside 0..%d", c, s, len(shards)-1)
				return false
			}
		}
		return true
	}
	require.NoError(t, quick.Check(f, quickConfig))
}

// forEach calls fn for every index of box in row-major order.
func forEach(box []Range, fn func(idx []int)) {
	for _, r := range box {
		if r.Len() == 0 {
			return
		}
	}
	idx := make([]int, len(box))
	for d := range idx {
		idx[d] = box[d].Start
	}
	for {
		fn(idx)
		if !next(idx, box) {
			return
		}
	}
}

// gather is the naive slice extraction: element by element.
func gather(raw []byte, es int, strides []int, box []Range) []byte {
	var out []byte
	forEach(box, func(idx []int) {
		off := 0
		for d, x := range idx {
			off += x * strides[d]
		}
		out = append(out, raw[off*es:(off+1)*es]...)
	})
	if out == nil {
		out = []byte{}
	}
	return out
}

func iota64(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(i)
	}
	return v
}

func TestExtract(t *testing.T) {
	x := tensor.Must(tensor.FromFloat64s(tensor.Float32, iota64(24), 2, 3, 4))
	tests := []struct {
		name string
		box  []Range
		want []float64
	}{
		{"last axis", []Range{{0, 2}, {0, 3}, {1, 3}}, []float64{1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22}},
		{"middle axis", []Range{{1, 2}, {1, 3}, {0, 4}}, []float64{16, 17, 18, 19, 20, 21, 22, 23}},
		{"first axis", []Range{{1, 2}, {0, 3}, {0, 4}}, iota64(24)[12:]},
		{"corner", []Range{{1, 2}, {2, 3}, {3, 4}}, []float64{23}},
		{"empty", []Range{{1, 1}, {0, 3}, {0, 4}}, []float64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(x, tt.box)
			require.NoError(t, err)
			assert.Equal(t, Slice{Ranges: tt.box}.Shape(), got.Shape())
			assert.Equal(t, tt.want, got.Float64s())
			assert.Equal(t, iota64(24), x.Float64s(), "the source is unchanged")
		})
	}
	all, err := Extract(x, []Range{{0, 2}, {0, 3}, {0, 4}})
	require.NoError(t, err)
	assert.True(t, all.SharesChunk(0, x, 0), "the whole tensor is shared, not copied")

	for _, box := range [][]Range{{{0, 2}}, {{0, 3}, {0, 3}, {0, 4}}, {{-1, 1}, {0, 3}, {0, 4}}, {{1, 0}, {0, 3}, {0, 4}}} {
		_, err := Extract(x, box)
		assert.ErrorIs(t, err, ErrShape, "box %v", box)
	}
	_, err = Extract(tensor.Tensor{}, nil)
	assert.ErrorIs(t, err, ErrShape)
}

func TestSplitSharesReplicas(t *testing.T) {
	m := mustMesh(t, map[string]int{DP: 2, TP: 2})
	x := tensor.Must(tensor.FromFloat64s(tensor.BFloat16, iota64(8), 4, 2))
	parts, err := Split(x, Spec{{TP}, nil}, m)
	require.NoError(t, err)
	assert.Equal(t, []float64{0, 1, 2, 3}, parts[0].Float64s())
	assert.Equal(t, []float64{4, 5, 6, 7}, parts[1].Float64s())
	assert.True(t, parts[2].SharesChunk(0, parts[0], 0), "replica 1 of shard 0 shares its storage")
	assert.True(t, parts[3].SharesChunk(0, parts[1], 0))

	_, err = Split(x, Spec{{TP}}, m)
	assert.ErrorIs(t, err, ErrSpec, "an uncorrected spec")
	_, err = Split(tensor.Tensor{}, Spec{}, m)
	assert.ErrorIs(t, err, ErrShape)
}

func TestJoinErrors(t *testing.T) {
	m, err := NewMesh(MeshConfig{Sizes: map[string]int{DP: 2, TP: 2}, Devices: []Device{{ID: 10}, {ID: 11}, {ID: 12}, {ID: 13}}})
	require.NoError(t, err)
	x := tensor.Must(tensor.FromFloat64s(tensor.Float32, iota64(8), 4, 2))
	spec := Spec{{TP}, nil}
	parts, err := Split(x, spec, m)
	require.NoError(t, err)

	with := func(i int, p tensor.Tensor) []tensor.Tensor {
		q := slices.Clone(parts)
		q[i] = p
		return q
	}
	changed := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{4, 5, 6, 99}, 2, 2))
	tests := []struct {
		name  string
		parts []tensor.Tensor
		err   error
		want  string
	}{
		{"replica differs", with(3, changed), ErrReplicaMismatch,
			"device 1 (id 11) and its replica device 3 (id 13) differ at element 3 of slice [[2, 4) [0, 2)]"},
		{"count", parts[:3], ErrShape, "3 parts for a mesh of 4 devices"},
		{"absent", with(2, tensor.Tensor{}), ErrShape, "part 2 (device id 12) is absent"},
		{"absent first", with(0, tensor.Tensor{}), ErrShape, "part 0 (device id 10) is absent"},
		{"dtype", with(1, tensor.Must(parts[1].AsType(tensor.Float64))), ErrShape, "part 1 (device id 11) is float64, part 0 is float32"},
		{"shape", with(1, tensor.Must(parts[1].Reshape(4))), ErrShape, "part 1 (device id 11) has shape [4], want [2 2]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Join(tt.parts, spec, m, []int{4, 2})
			require.ErrorIs(t, err, tt.err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err = Join(parts, Spec{{TP}}, m, []int{4, 2})
	assert.ErrorIs(t, err, ErrSpec)

	// Equal replicas in separate storage are accepted.
	own := tensor.Must(tensor.FromFloat64s(tensor.Float32, []float64{4, 5, 6, 7}, 2, 2))
	y, err := Join(with(3, own), spec, m, []int{4, 2})
	require.NoError(t, err)
	assert.True(t, x.Equal(y))
}

func TestJoinReplicatedReturnsPrimary(t *testing.T) {
	m := mustMesh(t, map[string]int{TP: 2})
	x := tensor.Must(tensor.FromFloat64s(tensor.Float16, iota64(6), 3, 2))
	parts, err := Split(x, Spec{nil, nil}, m)
	require.NoError(t, err)
	y, err := Join(parts, Spec{nil, nil}, m, []int{3, 2})
	require.NoError(t, err)
	assert.True(t, y.SharesChunk(0, x, 0))
}
