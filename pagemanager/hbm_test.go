package pagemanager

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvmesh/kvmesh/layers/paged"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newManager(t testing.TB, n, ps int) *HBMPageManager {
	t.Helper()
	m, err := NewHBMPageManager(Config{NumPages: n, PageSize: ps})
	require.NoError(t, err)
	return m
}

// freePages returns the free list, head first.
func freePages(m *HBMPageManager) []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.free.appendTo([]int32{})
}

// TestHBMPageManagerSpecVector is spec section 7.5's test vector.
func TestHBMPageManagerSpecVector(t *testing.T) {
	m := newManager(t, 5, 4)
	assert.Equal(t, []int32{1, 2, 3, 4}, freePages(m))
	assert.Equal(t, int32(0), m.CurrentPageIndex())
	assert.Equal(t, 4, m.PageSize())
	assert.Equal(t, 5, m.NumPages())

	pages, err := m.AllocPrefillHBMPages(5) // ceil(5/4) = 2
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 2}, pages)

	_, err = m.AllocHBMPages(3) // only 2 left
	require.ErrorIs(t, err, ErrNoFreePages)
	assert.Contains(t, err.Error(), "3 pages requested, 2 of 4 free")
	assert.Equal(t, []int32{3, 4}, freePages(m), "a failed allocation takes nothing")

	require.NoError(t, m.FreeHBMPages([]int32{0, 1}))
	assert.Equal(t, []int32{3, 4, 1}, freePages(m))

	pages, err = m.AllocHBMPages(3)
	require.NoError(t, err)
	assert.Equal(t, []int32{3, 4, 1}, pages)
	assert.Equal(t, 0, m.NumFree())
}

func TestAllocPrefillHBMPages(t *testing.T) {
	tests := []struct{ promptLen, want int }{{1, 1}, {4, 1}, {5, 2}, {8, 2}, {9, 3}, {36, 9}}
	for _, tt := range tests {
		m := newManager(t, 10, 4)
		pages, err := m.AllocPrefillHBMPages(tt.promptLen)
		require.NoError(t, err)
		assert.Len(t, pages, tt.want, "prompt length %d", tt.promptLen)
	}
	m := newManager(t, 10, 4)
	_, err := m.AllocPrefillHBMPages(37)
	require.ErrorIs(t, err, ErrNoFreePages)
	assert.Contains(t, err.Error(), "10 pages requested, 9 of 9 free")
	for _, bad := range []int{0, -3} {
		_, err = m.AllocPrefillHBMPages(bad)
		require.ErrorIs(t, err, ErrInvalidCount)
	}
	_, err = m.AllocPrefillHBMPages(math.MaxInt) // no overflow in the page count
	require.ErrorIs(t, err, ErrNoFreePages)
	assert.Equal(t, 9, m.NumFree())
}

func TestAllocHBMPagesInvalidCount(t *testing.T) {
	m := newManager(t, 5, 4)
	for _, n := range []int{0, -1} {
		_, err := m.AllocHBMPages(n)
		require.ErrorIs(t, err, ErrInvalidCount)
		assert.Contains(t, err.Error(), "want at least 1")
	}
	assert.Equal(t, 4, m.NumFree())
}

func TestFreeHBMPagesErrorsChangeNothing(t *testing.T) {
	tests := []struct {
		name  string
		pages []int32
		is    error
		want  string
	}{
		{"already free", []int32{2, 4}, ErrDoubleFree, "page 4 at entry 1 is already free"},
		{"listed twice", []int32{1, 0, 3, 1}, ErrDoubleFree, "page 1 listed at entries 0 and 3"},
		{"too large", []int32{1, 2, 6}, ErrOutOfRange, "page 6 at entry 2 (pages are 0..5)"},
		{"negative", []int32{-1}, ErrOutOfRange, "page -1 at entry 0"},
		{"pool size", []int32{3, 6}, ErrOutOfRange, "page 6 at entry 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, 6, 4)
			held, err := m.AllocHBMPages(3) // 1, 2, 3 held; 4, 5 free
			require.NoError(t, err)
			require.Equal(t, []int32{1, 2, 3}, held)
			err = m.FreeHBMPages(tt.pages)
			require.ErrorIs(t, err, tt.is)
			assert.Contains(t, err.Error(), tt.want)
			assert.Equal(t, []int32{4, 5}, freePages(m), "nothing freed")
			require.NoError(t, m.FreeHBMPages([]int32{3, 1, 2}), "the held pages can still be freed")
			assert.Equal(t, []int32{4, 5, 3, 1, 2}, freePages(m))
		})
	}
}

func TestFreeHBMPagesDummyAndEmpty(t *testing.T) {
	m := newManager(t, 3, 1)
	require.NoError(t, m.FreeHBMPages(nil))
	require.NoError(t, m.FreeHBMPages([]int32{0, 0}), "page 0 is ignored, even twice")
	assert.Equal(t, []int32{1, 2}, freePages(m))
}

func TestNewHBMPageManagerConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"only the dummy page", Config{NumPages: 1, PageSize: 4}, "1 pages, want 2..2147483647"},
		{"too many pages", Config{NumPages: math.MaxInt32 + 1, PageSize: 4}, "2147483648 pages"},
		{"page size", Config{NumPages: 4, PageSize: 0}, "page size 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewHBMPageManager(tt.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	meta := paged.Metadata{BatchSize: 1, NumHiddenLayers: 1, NumPagesPerLayer: 9, NumPagesPerSequence: 2, MaxSequences: 8,
		PageSize: 4, NumKVHeads: 1, KVHeadDimSize: 1, HBMUtilization: 0.5}
	m, err := NewHBMPageManager(ConfigFromMetadata(meta))
	require.NoError(t, err)
	assert.Equal(t, Config{NumPages: 9, PageSize: 4}, m.Config())
	assert.Equal(t, 8, m.NumFree())
}

// TestHBMPageManagerConcurrent allocates and frees from several
// goroutines; an owner table checks that no page is ever handed to two
// holders at once. Run it with -race.
func TestHBMPageManagerConcurrent(t *testing.T) {
	const n, workers, rounds = 33, 4, 2000
	m := newManager(t, n, 16)
	var owner [n]atomic.Int32
	var wg sync.WaitGroup
	var failures atomic.Int32
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				pages, err := m.AllocHBMPages(1 + (w+r)%8)
				if errors.Is(err, ErrNoFreePages) {
					continue
				}
				if err != nil {
					failures.Add(1)
					return
				}
				for _, p := range pages {
					if p == 0 || !owner[p].CompareAndSwap(0, int32(w+1)) {
						failures.Add(1)
					}
				}
				for _, p := range pages {
					owner[p].Store(0)
				}
				if err := m.FreeHBMPages(pages); err != nil {
					failures.Add(1)
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, failures.Load())
	assert.Equal(t, n-1, m.NumFree())
	free := freePages(m)
	slices.Sort(free)
	for i, p := range free {
		assert.Equal(t, int32(i+1), p)
	}
}

// FuzzHBMPageManager decodes its input into alloc and free operations,
// some of them invalid, and checks the manager after each against a naive
// model: a slice FIFO of free pages and a slice of held pages.
func FuzzHBMPageManager(f *testing.F) {
	f.Add([]byte{3, 0, 2, 2, 0xff, 1, 9, 3, 0x01})
	f.Add([]byte{12, 0, 5, 0, 5, 2, 0x0f, 7, 0xff, 11, 0x03, 15, 0x01, 19, 0x81, 0, 20})
	f.Add([]byte{0, 1, 0, 1, 1, 1, 2, 3, 3, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		n := 2 + int(data[0])%15 // 2..16 pages
		data = data[1:]
		m := newManager(t, n, 4)
		var modelFree, held []int32
		for p := 1; p < n; p++ {
			modelFree = append(modelFree, int32(p))
		}
		for len(data) >= 2 {
			op, arg := data[0], data[1]
			data = data[2:]
			switch op % 4 {
			case 0, 1: // alloc
				count := int(arg)%(n+3) - 1 // -1..n+1
				got, err := m.AllocHBMPages(count)
				switch {
				case count <= 0:
					require.ErrorIs(t, err, ErrInvalidCount)
				case count > len(modelFree):
					require.ErrorIs(t, err, ErrNoFreePages)
				default:
					require.NoError(t, err)
					require.Equal(t, modelFree[:count], got)
					held = append(held, got...)
					modelFree = slices.Clone(modelFree[count:])
				}
			case 2, 3: // free the held pages picked by arg's bits, maybe with a bad entry
				var list []int32
				for j, p := range held {
					if arg>>(j%8)&1 != 0 {
						list = append(list, p)
					}
				}
				if op&4 != 0 {
					slices.Reverse(list)
				}
				if op%4 == 3 {
					at := int(op>>3) % (len(list) + 1)
					var bad int32
					switch (op >> 5) % 5 {
					case 0:
						bad = 0
					case 1:
						bad = -1
					case 2:
						bad = int32(n)
					case 3:
						if len(modelFree) > 0 {
							bad = modelFree[int(arg)%len(modelFree)]
						}
					case 4:
						if len(list) > 0 {
							bad = list[0]
						}
					}
					list = slices.Insert(list, at, bad)
				}
				err := m.FreeHBMPages(list)
				if wantErr := modelFreeErr(list, held, n); wantErr != nil {
					require.ErrorIs(t, err, wantErr, "free %v", list)
				} else {
					require.NoError(t, err, "free %v", list)
					for _, p := range list {
						if p != 0 {
							modelFree = append(modelFree, p)
							held = slices.DeleteFunc(held, func(q int32) bool { return q == p })
						}
					}
				}
			}
			// The manager matches the model, and the invariants hold.
			require.Equal(t, len(modelFree), m.NumFree())
			free := freePages(m)
			require.Equal(t, modelFree, free, "free list order")
			require.Equal(t, n-1, len(free)+len(held), "free + held = N-1")
			for _, p := range held {
				require.True(t, p >= 1 && int(p) < n, "held page %d", p)
				require.NotContains(t, free, p, "page %d both free and held", p)
			}
			require.NotContains(t, free, int32(0), "page 0 is never free")
		}
	})
}

// modelFreeErr returns the error a free of list must give, or nil.
func modelFreeErr(list, held []int32, n int) error {
	seen := map[int32]bool{}
	for _, p := range list {
		switch {
		case p == 0:
		case p < 0 || int(p) >= n:
			return ErrOutOfRange
		case !slices.Contains(held, p) || seen[p]:
			return ErrDoubleFree
		}
		seen[p] = true
	}
	return nil
}

func BenchmarkHBMPageManager(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			m := newManager(b, 1024, 16)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				pages, err := m.AllocHBMPages(n)
				if err != nil {
					b.Fatal(err)
				}
				if err := m.FreeHBMPages(pages); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pairs/s")
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pages/s")
		})
	}
}
