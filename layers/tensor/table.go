package tensor

import "sync/atomic"

// chunk is one block of a tensor's elements, little-endian. Elements at and
// beyond tip have never been written since the chunk was allocated, so they
// are zero; a writer may claim them in place (see Editor).
type chunk struct {
	data  []byte
	tip   atomic.Int64 // in elements
	owner uint64       // id of the Editor that allocated it; private to it until published
}

// fanBits sets the fan-out of the chunk table: 64 children per node, so a
// table of a million chunks is four levels deep.
const (
	fanBits = 6
	fan     = 1 << fanBits
)

// node is a node of the persistent chunk table: inner nodes hold kids, leaf
// nodes hold chunks. Nodes reachable from a published Tensor never change.
type node struct {
	kids   []*node
	chunks []*chunk
	owner  uint64 // id of the Editor that copied it; private to it until published
}

// table is a persistent vector of chunk pointers (a radix tree with path
// copying): replacing one chunk copies O(log64 n) nodes of 64 pointers, so
// the cost of publishing a new version does not grow with the tensor.
// A nil chunk reads as zeros.
type table struct {
	root   *node
	height int // 0 when the root is a leaf
	n      int // number of chunks
}

func newTable(n int) *table {
	height := 0
	for c := fan; c < n; c <<= fanBits {
		height++
	}
	return &table{root: buildNode(n, height), height: height, n: n}
}

// buildNode builds a subtree of height h holding n nil chunks.
func buildNode(n, h int) *node {
	if h == 0 {
		return &node{chunks: make([]*chunk, n)}
	}
	span := 1 << (fanBits * h)
	kids := make([]*node, (n+span-1)/span)
	for i := range kids {
		kids[i] = buildNode(min(span, n-i*span), h-1)
	}
	return &node{kids: kids}
}

func (t *table) get(i int) *chunk {
	nd := t.root
	for h := t.height; h > 0; h-- {
		nd = nd.kids[(i>>(fanBits*h))&(fan-1)]
	}
	return nd.chunks[i&(fan-1)]
}

// tableEditor replaces chunks of a table by path copying. Each node is copied
// at most once per editor; nodes it copied carry its id and are private to it
// until published.
type tableEditor struct {
	t  table
	id uint64
}

func (e *tableEditor) own(nd *node) *node {
	if nd.owner == e.id {
		return nd
	}
	cp := &node{owner: e.id}
	if nd.kids != nil {
		cp.kids = append([]*node(nil), nd.kids...)
	} else {
		cp.chunks = append([]*chunk(nil), nd.chunks...)
	}
	return cp
}

func (e *tableEditor) set(i int, c *chunk) {
	e.t.root = e.own(e.t.root)
	nd := e.t.root
	for h := e.t.height; h > 0; h-- {
		k := (i >> (fanBits * h)) & (fan - 1)
		nd.kids[k] = e.own(nd.kids[k])
		nd = nd.kids[k]
	}
	nd.chunks[i&(fan-1)] = c
}
