package parity_test

import (
	"fmt"
	"strings"

	"github.com/kvmesh/kvmesh/layers/reference/parity"
)

// Run an embedded golden file through every schedule of the Mamba caches
// and summarise the comparison with the external references.
func ExampleRun() {
	data, err := parity.Golden("golden/mamba1_inner.json")
	if err != nil {
		panic(err)
	}
	res, err := parity.Run("mamba1_inner.json", data, parity.Options{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %d checks, all within tolerance: %v\n", res.Case, len(res.Checks), res.OK())
	for _, c := range res.Checks {
		if strings.HasPrefix(c.Name, "prefill5/") {
			fmt.Printf("%s against %s: %v\n", c.Name, c.Reference, c.OK)
		}
	}
	// Output:
	// mamba1_inner: 16 checks, all within tolerance: true
	// prefill5/y against y_step: true
	// prefill5/conv_state_traj against conv_state_traj: true
	// prefill5/ssm_state_traj against ssm_state_traj: true
	// prefill5/conv_out against conv_out_step: true
}
