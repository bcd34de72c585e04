package layerlist_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/layerlist"
)

// count is a view holding a counter; the zero count is the empty view.
type count struct{ n int }

func (c count) IsEmpty() bool { return c.n == 0 }

func (c count) String() string {
	if c.IsEmpty() {
		return "None"
	}
	return fmt.Sprint(c.n)
}

func Example() {
	ops := layerlist.Ops[count]{
		OutOfRange:   errors.New("demo: out of range"),
		Empty:        errors.New("demo: empty view"),
		Incompatible: errors.New("demo: incompatible"),
	}
	views := []count{{1}, {}, {3}}
	inc := func(c count) (count, error) { return count{c.n + 1}, nil }
	next, _ := ops.Update(views, 2, inc)
	fmt.Println(layerlist.String("DemoCache", views), layerlist.String("DemoCache", next))
	_, err := ops.Update(views, 1, inc)
	fmt.Println(err)
	_, err = ops.Get(views, 5)
	fmt.Println(err)
	// Output:
	// DemoCache(views=[1, None, 3]) DemoCache(views=[1, None, 4])
	// demo: empty view: Cache view for layer 1 is None
	// demo: out of range: list index out of range: layer 5 (cache has layers 0..2)
}
