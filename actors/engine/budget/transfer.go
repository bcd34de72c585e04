package budget

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"

	"github.com/kvmesh/kvmesh/actors/transfer"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// transferName names the KV-transfer budget.
const transferName = "KV transfer between two nodes vs raw TCP (loopback)"

// transferBytes is the KV moved per transfer in the KV-transfer budget:
// 32 MiB, the KV of 256 tokens of a Llama-3-8B-shaped model (32 layers of
// 8 kv heads of 128 dims, K and V, bf16: 128 KiB a token), sent as one
// tensor. Real prompts move more; at a few MiB the fixed cost of a
// transfer's control messages weighs more (BenchmarkKVTransfer in
// actors/transfer reports 4 MiB too).
const transferBytes = 32 << 20

// kvTransfer measures transfer.Node.Send of a 32 MiB bundle between two
// nodes on loopback (the bulk side channel, acked and committed) against a
// raw TCP copy of the same bytes on loopback (one connection, a 1-byte ack
// per copy), both in this run. The receiving node's process holds 256 MiB
// of resident data meanwhile, as a decode node holds its KV cache (with a
// heap of a few MiB the collector would run after every transfer).
func kvTransfer(name string) (Result, error) {
	resident := make([]byte, 256<<20)
	defer runtime.KeepAlive(resident)
	x, err := tensor.FromBytes(tensor.BFloat16, make([]byte, transferBytes), transferBytes/2)
	if err != nil {
		return Result{}, err
	}
	quiet := slog.New(slog.DiscardHandler)
	node, _, err := bench(func(b *testing.B) error {
		dst, err := transfer.NewNode(transfer.Config{Listen: "127.0.0.1:0", Logger: quiet})
		if err != nil {
			return err
		}
		defer dst.Close()
		src, err := transfer.NewNode(transfer.Config{Listen: "127.0.0.1:0", Logger: quiet})
		if err != nil {
			return err
		}
		defer src.Close()
		bundle := transfer.Bundle{Names: []string{"kv"}, Tensors: []tensor.Tensor{x}}
		b.ResetTimer()
		for range b.N {
			if err := src.Send(context.Background(), dst.Address(), bundle); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	raw, err := rawTCPNs(x.Bytes())
	if err != nil {
		return Result{}, err
	}
	mbps := func(ns float64) float64 { return transferBytes / ns * 1e3 }
	ratio := raw / node
	return Result{Name: name, Measured: fmt.Sprintf("transfer %.0f MB/s vs raw TCP %.0f MB/s (32 MiB)", mbps(node), mbps(raw)),
		Value: ratio, Limit: ">= 0.50", Pass: ratio >= 0.5}, nil
}

// rawTCPNs returns ns per copy of payload over one loopback TCP
// connection, the receiver reading it into one reused buffer and
// answering one byte.
func rawTCPNs(payload []byte) (float64, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		buf := make([]byte, len(payload))
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				return
			}
			if _, err := conn.Write([]byte{1}); err != nil {
				return
			}
		}
	}()
	defer func() { <-done }()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ns, _, err := bench(func(b *testing.B) error {
		one := make([]byte, 1)
		for range b.N {
			if _, err := conn.Write(payload); err != nil {
				return err
			}
			if _, err := io.ReadFull(conn, one); err != nil {
				return err
			}
		}
		return nil
	})
	return ns, err
}
