package transformer

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/kvmesh/kvmesh/layers/tensor"
)

// quantBenchStorages are the storages BenchmarkQuantizedDecodeWrite
// compares, all with a bfloat16 cache dtype (EasyDeL's default).
var quantBenchStorages = []struct {
	name string
	st   Storage
}{
	{"bf16", Storage{DType: tensor.BFloat16}},
	{"int8", Storage{DType: tensor.BFloat16, Quantization: tensor.Int8}},
	{"nf4", Storage{DType: tensor.BFloat16, Quantization: tensor.NF4}},
}

// BenchmarkQuantizedDecodeWrite measures one decode write (q = 1 per row)
// of one layer through View.Append, batch 8, 8 kv heads, head dim 128, as
// BenchmarkTransformerDecodeWrite does, for an unquantized bfloat16 cache
// and int8 and NF4 (block 64) caches with bfloat16 scales, at two contexts:
// a quantized write quantizes only its own 2·8·8 rows, so its cost does not
// grow with the context either. SetBytes counts the input bytes (bf16 K
// and V).
func BenchmarkQuantizedDecodeWrite(b *testing.B) {
	for _, s := range quantBenchStorages {
		for _, n := range []int{128, 32768} {
			b.Run(fmt.Sprintf("%s/ctx=%d", s.name, n), func(b *testing.B) {
				d := newDecodeBench(b, n)
				meta := testMeta(b, benchB, n, benchH, benchD, 1)
				c, err := InitStorage(meta, s.st, nil)
				require.NoError(b, err)
				if c, err = c.InsertIndex(d.rewind, 0); err != nil {
					b.Fatal(err)
				}
				d.cache = c
				if d.view, err = c.View(0); err != nil {
					b.Fatal(err)
				}
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
}
