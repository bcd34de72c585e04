package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/telemetry"
	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/kvmesh/kvmesh/layers/tensor"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// A runtime records on the Prometheus provider; its handler serves what
// was recorded (here through httptest; telemetry.Serve listens for real).
func Example() {
	p, err := telemetry.NewPrometheus()
	if err != nil {
		panic(err)
	}
	defer func() { _ = p.Shutdown(context.Background()) }()
	rt, err := actors.NewRuntime(actors.WithMeterProvider(p.MeterProvider()))
	if err != nil {
		panic(err)
	}
	defer func() { _ = rt.Close() }()
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 4, MaxSequences: 16,
		PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 4, HBMUtilization: 0.5}
	c, err := rt.NewCache("chat", actors.Spec{Paged: &actors.PagedSpec{Metadata: meta, DType: tensor.Float32,
		Pool: &pagemanager.PoolConfig{PrefixCaching: true}}})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	prompt := []int32{1, 2, 3, 4, 5, 6}
	for seq := pagemanager.SeqID(1); seq <= 2; seq++ { // the same prompt twice
		if _, _, err := c.AddSequence(ctx, seq, pagemanager.Request{Tokens: prompt}); err != nil {
			panic(err)
		}
		if err := c.FreeSequence(ctx, seq); err != nil {
			panic(err)
		}
	}

	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	res, err := srv.Client().Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer func() { _ = res.Body.Close() }()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "kvmesh_pool_") {
			name, value, _ := strings.Cut(line, "{")
			fmt.Println(name, value[strings.LastIndex(value, " ")+1:])
		}
	}
	// Output:
	// kvmesh_pool_free_pages 8
	// kvmesh_pool_hit_tokens_total 4
	// kvmesh_pool_prompt_tokens_total 12
}
