//go:build !race

// protoactor's cluster races inside the library when members run
// in-process (see tests/cluster); this example runs without -race.

package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/kvmesh/kvmesh/actors"
	"github.com/kvmesh/kvmesh/actors/cluster"
	"github.com/kvmesh/kvmesh/layers/mamba"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// loopback returns a free loopback host:port whose port + HealthPortOffset
// is free too (the automanaged provider's health endpoint).
func loopback() string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if port+cluster.HealthPortOffset > 65535 {
			continue
		}
		h, err := net.Listen("tcp", "0.0.0.0:"+strconv.Itoa(port+cluster.HealthPortOffset))
		if err != nil {
			continue
		}
		_ = h.Close()
		return "127.0.0.1:" + strconv.Itoa(port)
	}
}

// A member hosts the grains (what `kvmesh node` runs); a client joins the
// same cluster and drives a Mamba cache whose two layers are grains on it.
func Example() {
	member, client := loopback(), loopback()
	quiet := slog.New(slog.DiscardHandler)
	m, err := cluster.StartMember(cluster.Config{Listen: member, Members: []string{member}, Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer m.Shutdown()
	rt, err := cluster.NewRuntime(cluster.Config{Listen: client, Members: []string{member}, Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer func() { _ = rt.Close() }()
	time.Sleep(2 * time.Second) // the automanaged provider polls its members every second

	spec := actors.Spec{Mamba: &actors.MambaSpec{DType: tensor.Float32, Metadata: mamba.Metadata{NumHiddenLayers: 2,
		BatchSize: 1, IntermediateSize: 4, SSMStateSize: 2, ConvKernelSize: 3}}}
	c, err := rt.NewCache("demo", spec)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	ones := func(shape ...int) tensor.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float64, n)
		for i := range data {
			data[i] = 1
		}
		return tensor.Must(tensor.FromFloat64s(tensor.Float32, data, shape...))
	}
	var writes []actors.LayerWrite
	for l := range 2 {
		writes = append(writes, actors.LayerWrite{Layer: l, Write: &actors.MambaWrite{ConvSSM: actors.ConvSSM{
			ConvColumn: ones(1, 4), CachePosition: 0, SSMState: ones(1, 4, 2)}}})
	}
	v, _, err := c.Step(ctx, 0, writes)
	if err != nil {
		panic(err)
	}
	_, _, err = c.Step(ctx, 0, writes)
	fmt.Println("version", v, "| a second step on version 0:", err != nil)
	cur, err := c.Current(ctx)
	if err != nil {
		panic(err)
	}
	st := cur.Views[1].(mamba.View).SSMStates()
	fmt.Println("layer 1 ssm state", st.Shape(), "sum", sum(st))
	// Output:
	// version 1 | a second step on version 0: true
	// layer 1 ssm state [1 4 2] sum 8
}

func sum(t tensor.Tensor) float64 {
	s := 0.0
	for _, x := range t.Float64s() {
		s += x
	}
	return s
}
