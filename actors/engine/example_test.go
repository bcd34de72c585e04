package engine_test

import (
	"context"
	"fmt"

	"github.com/kvmesh/kvmesh/actors/engine"
)

// Serve a small workload and read the report's deterministic parts.
func ExampleRun() {
	cfg := engine.DefaultConfig()
	cfg.Workload.Requests = 8
	cfg.Workload.Turns = 2
	cfg.Workload.SystemLen = engine.Range{Min: 16, Max: 48}
	cfg.Workload.UserLen = engine.Range{Min: 4, Max: 16}
	cfg.Workload.OutputLen = engine.Range{Min: 4, Max: 12}
	cfg.Verify = 2
	rep, err := engine.Run(context.Background(), cfg)
	if err != nil {
		panic(err)
	}
	fmt.Println("requests:", rep.Requests, "model:", rep.Model)
	fmt.Println("every output token generated:", rep.TokensOut > 0 && rep.TokensComputed >= rep.TokensOut)
	fmt.Println("verified:", rep.Verified, "pages free at the end:", rep.PagesFreeAtEnd == rep.Pages)
	// Output:
	// requests: 8 model: attention,mamba2,lightning,attention
	// every output token generated: true
	// verified: true pages free at the end: true
}
