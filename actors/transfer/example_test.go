//go:build !race

// Two remotes in one process: built without -race (see transfer_test.go).

package transfer_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kvmesh/kvmesh/actors/transfer"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// A decode node receives a bundle from a prefill node on loopback.
func Example() {
	quiet := slog.New(slog.DiscardHandler)
	done := make(chan transfer.Bundle, 1)
	decode, err := transfer.NewNode(transfer.Config{Listen: "127.0.0.1:0", Logger: quiet,
		Handler: func(_ context.Context, b transfer.Bundle) error { done <- b; return nil }})
	if err != nil {
		panic(err)
	}
	defer decode.Close()
	prefill, err := transfer.NewNode(transfer.Config{Listen: "127.0.0.1:0", Logger: quiet, ChunkSize: 1024})
	if err != nil {
		panic(err)
	}
	defer prefill.Close()

	k := tensor.Must(tensor.FromFloat64s(tensor.BFloat16, make([]float64, 3000), 1000, 3))
	b := transfer.Bundle{Names: []string{transfer.KeyName(0)}, Tensors: []tensor.Tensor{k},
		Metadata: map[string]string{transfer.MetaLength: "1000"}}
	if err := prefill.Send(context.Background(), decode.Address(), b); err != nil {
		panic(err)
	}
	got := <-done
	x, _ := got.Tensor(transfer.KeyName(0))
	fmt.Println(got.Names, x.Shape(), x.Equal(k), got.Metadata[transfer.MetaLength])
	// Output: [layer/0/key] [1000 3] true 1000
}
