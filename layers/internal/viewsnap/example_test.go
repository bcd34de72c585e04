package viewsnap_test

import (
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/viewsnap"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// counter is a view holding one int32 array; the zero counter is empty.
type counter struct{ counts []int32 }

func (c counter) IsEmpty() bool { return c.counts == nil }

func Example() {
	codec := viewsnap.Codec[counter]{
		ViewFormat:  "demo.View/v1",
		CacheFormat: "demo.Cache/v1",
		Err:         errors.New("demo: bad snapshot"),
		Fields:      []string{"metadata", "counts"},
		Put: func(e viewsnap.Entry, c counter) error {
			e.SetInt32s("counts", c.counts)
			return e.SetMetadata(map[string]int{"len": len(c.counts)})
		},
		Get: func(e viewsnap.Entry) (counter, error) {
			var m map[string]int
			if err := e.Metadata(&m); err != nil {
				return counter{}, err
			}
			return counter{counts: e.Int32s("counts")}, nil
		},
	}
	data, _ := codec.MarshalCache([]counter{{counts: []int32{3, 4}}, {}})
	s, _ := tensor.UnmarshalSnapshot(data)
	fmt.Println(s.Metadata["views.0.metadata"], s.Metadata["views.1.empty"], s.Int32s["views.0.counts"])
	back, _ := codec.UnmarshalCache(data)
	fmt.Println(back[0].counts, back[1].IsEmpty())
	_, err := codec.UnmarshalView(data)
	fmt.Println(err)
	// Output:
	// {"len":2} true [3 4]
	// [3 4] true
	// demo: bad snapshot: format "demo.Cache/v1", want "demo.View/v1"
}
