package actors

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/kvmesh/kvmesh/actors/telemetry"
	"github.com/kvmesh/kvmesh/messages"
	"github.com/kvmesh/kvmesh/pagemanager"
)

// collected reads every data point of the runtime's meters
// (telemetry.Points).
func collected(t *testing.T, r *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	out, err := telemetry.Points(rm)
	require.NoError(t, err)
	return out
}

// With a meter provider, every API call is counted by cache, operation and
// status code, and a pool's counters follow what its steps report.
func TestRuntimeMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rt, err := NewRuntime(WithMeterProvider(mp))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rt.Close() })
	ctx := context.Background()

	c, err := rt.NewCache("p", poolSpec())
	require.NoError(t, err)
	prompt := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	_, _, err = c.AddSequence(ctx, 1, pagemanager.Request{Tokens: prompt})
	require.NoError(t, err)
	require.NoError(t, c.FreeSequence(ctx, 1))
	step, _, err := c.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt[:6]})
	require.NoError(t, err)
	require.Equal(t, 4, step.HitTokens)
	_, _, err = c.AddSequence(ctx, 2, pagemanager.Request{Tokens: prompt})
	require.ErrorIs(t, err, ErrInvalid)
	other := make([]int32, 24)
	for i := range other {
		other[i] = int32(100 + i)
	}
	step, _, err = c.AddSequence(ctx, 3, pagemanager.Request{Tokens: other})
	require.NoError(t, err)
	require.Equal(t, 1, step.Evicted, "the six free pages include one cached full page")
	_, err = c.Current(ctx)
	require.NoError(t, err)
	_, err = c.Snapshot(ctx, 99)
	require.ErrorIs(t, err, ErrNotFound)

	got := collected(t, reader)
	for name, want := range map[string]float64{
		"kvmesh.cache.request.duration{cache=p,code=ok,op=add_sequence}":               3,
		"kvmesh.cache.request.duration{cache=p,code=invalid_argument,op=add_sequence}": 1,
		"kvmesh.cache.request.duration{cache=p,code=ok,op=free_sequence}":              1,
		"kvmesh.cache.request.duration{cache=p,code=ok,op=current}":                    1,
		"kvmesh.cache.request.duration{cache=p,code=not_found,op=snapshot}":            1,
		// The refused third add counts no tokens: only admitted prompts do.
		"kvmesh.pool.prompt.tokens{cache=p}": 9 + 6 + 24,
		"kvmesh.pool.hit.tokens{cache=p}":    4,
		"kvmesh.pool.evictions{cache=p}":     1,
		// 8 usable pages (page 0 is reserved): sequences 2 and 3 hold all.
		"kvmesh.pool.free.pages{cache=p}": 0,
	} {
		assert.Equal(t, want, got[name], name)
	}
	assert.Len(t, got, 9, "no other series: %v", got)

	require.NoError(t, c.Close())
	got = collected(t, reader)
	assert.NotContains(t, got, "kvmesh.pool.free.pages{cache=p}", "a closed cache's gauge goes away")
}

// Code labels errors by their wire status code.
func TestCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{errorf(ErrStale, "cache x: base 3"), "stale_version"},
		{&StatusError{Code: messages.Code_CODE_BUSY, Message: "from a reply"}, "busy"},
		{fmt.Errorf("wrapped: %w", pagemanager.ErrNoFreePages), "no_free_pages"},
		{fmt.Errorf("cache x: %w", context.Canceled), "canceled"},
		{context.DeadlineExceeded, "deadline_exceeded"},
		{errors.New("anything else"), "invalid_argument"},
	} {
		assert.Equal(t, tc.want, Code(tc.err), "%v", tc.err)
	}
}
