package transformer

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

const (
	benchB, benchH, benchD = 8, 8, 128
	benchWindow            = 64 // positions [N-64, N) are written, then the index wraps
)

var benchContexts = []int{128, 2048, 32768}

// decodeBench holds a one-layer bfloat16 cache at index N-64 and one decode
// token per row.
type decodeBench struct {
	cache  Cache
	view   View
	tok    tensor.Tensor
	rewind []int32
	n      int
}

func newDecodeBench(b *testing.B, n int) *decodeBench {
	meta := testMeta(b, benchB, n, benchH, benchD, 1)
	c, err := Init(meta, tensor.BFloat16, nil)
	require.NoError(b, err)
	rewind := make([]int32, benchB)
	for i := range rewind {
		rewind[i] = int32(n - benchWindow)
	}
	c, err = c.InsertIndex(rewind, 0)
	require.NoError(b, err)
	v, err := c.View(0)
	require.NoError(b, err)
	tok := kv(b, benchB, 1, benchH, benchD, func(b, _, h, d int) float64 { return float64(b+h+d) / 64 })
	tok, err = tok.AsType(tensor.BFloat16)
	require.NoError(b, err)
	return &decodeBench{cache: c, view: v, tok: tok, rewind: rewind, n: n}
}

// wrap moves the index back to N-64 once the row is full, through
// InsertIndex (cheap: the index only shrinks).
func (d *decodeBench) wrap(b *testing.B) {
	if int(d.view.index[0]) < d.n {
		return
	}
	c, err := d.cache.WithView(0, d.view)
	if err == nil {
		c, err = c.InsertIndex(d.rewind, 0)
	}
	if err == nil {
		d.view, err = c.View(0)
	}
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkTransformerDecodeWrite measures one decode write (q = 1 per row)
// of one layer through View.Append: its cost must not grow with the context
// (DESIGN budget: 32k within 1.3x of 128).
func BenchmarkTransformerDecodeWrite(b *testing.B) {
	for _, n := range benchContexts {
		b.Run(fmt.Sprintf("ctx=%d", n), func(b *testing.B) {
			d := newDecodeBench(b, n)
			b.SetBytes(int64(2 * d.tok.NumBytes()))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d.wrap(b)
				v, err := d.view.Append(d.tok, d.tok)
				if err != nil {
					b.Fatal(err)
				}
				d.view = v
			}
		})
	}
}

// BenchmarkConcatenateToCache measures the same write through
// ConcatenateToCache with a 2-D all-ones attention mask and no causal mask;
// building the (B, 1, 1, S) mask costs O(S) by nature.
func BenchmarkConcatenateToCache(b *testing.B) {
	for _, n := range benchContexts {
		b.Run(fmt.Sprintf("ctx=%d", n), func(b *testing.B) {
			d := newDecodeBench(b, n)
			attn := fullMask(benchB, n)
			b.SetBytes(int64(2 * d.tok.NumBytes()))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d.wrap(b)
				_, _, _, v, err := d.view.ConcatenateToCache(d.tok, d.tok, d.tok, attn, ConcatOptions{})
				if err != nil {
					b.Fatal(err)
				}
				d.view = v
			}
		})
	}
}
