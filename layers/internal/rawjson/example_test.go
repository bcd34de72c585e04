package rawjson_test

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/kvmesh/kvmesh/layers/internal/rawjson"
)

func Example() {
	fmt.Printf("%s\n", rawjson.Compact(json.RawMessage(`{ "head_axis": "tp" }`)))
	fmt.Println(rawjson.Compact(json.RawMessage("null")) == nil)
	fmt.Println(rawjson.Check(errors.New("demo: invalid metadata"), "partition_axis", json.RawMessage("{")))
	// Output:
	// {"head_axis":"tp"}
	// true
	// demo: invalid metadata: partition_axis is not valid JSON: "{"
}
