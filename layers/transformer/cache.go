package transformer

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kvmesh/kvmesh/layers/internal/kvquant"
	"github.com/kvmesh/kvmesh/layers/tensor"
)

// Cache is a transformer KV cache: one View per layer (EasyDeL's
// TransformerCache). An entry may be the empty View (EasyDeL's None).
//
// A Cache is an immutable value: Insert, InsertIndex, InsertStarts and
// WithView return a new Cache and leave the receiver unchanged (EasyDeL's
// insert, insert_index, insert_starts and __setitem__ mutate the cache).
type Cache struct {
	views []View
}

// Init returns a zero-filled cache for meta (EasyDeL's init_cache): one view
// per layer, with layer indexes 0..num_hidden_layers-1, key and value of
// dtype, unquantized, and the same starts for every layer (all zeros when
// nil). It is InitStorage(meta, Storage{DType: dtype}, starts).
func Init(meta Metadata, dtype tensor.DType, starts []int32) (Cache, error) {
	return InitStorage(meta, Storage{DType: dtype}, starts)
}

// InitEmpty returns a cache of numLayers empty views (EasyDeL's init_empty:
// views = [None] * L). It panics if numLayers is negative.
func InitEmpty(numLayers int) Cache {
	if numLayers < 0 {
		panic(fmt.Sprintf("transformer: InitEmpty(%d)", numLayers))
	}
	return Cache{views: make([]View, numLayers)}
}

// Len returns the number of views (layers).
func (c Cache) Len() int { return len(c.views) }

// View returns the view of layer i (possibly empty); i out of range is an
// error naming it.
func (c Cache) View(i int) (View, error) {
	if err := c.checkLayer(i); err != nil {
		return View{}, err
	}
	return c.views[i], nil
}

func (c Cache) checkLayer(i int) error {
	if i < 0 || i >= len(c.views) {
		return fmt.Errorf("%w: layer %d (cache has layers 0..%d)", ErrOutOfRange, i, len(c.views)-1)
	}
	return nil
}

// WithView returns a copy of c whose layer i is v (EasyDeL's __setitem__,
// without mutating c). v may be empty.
func (c Cache) WithView(i int, v View) (Cache, error) {
	if err := c.checkLayer(i); err != nil {
		return Cache{}, err
	}
	views := slices.Clone(c.views)
	views[i] = v
	return Cache{views: views}, nil
}

// String describes the cache and its views.
func (c Cache) String() string {
	parts := make([]string, len(c.views))
	for i, v := range c.views {
		parts[i] = v.String()
	}
	return "TransformerCache(views=[" + strings.Join(parts, ", ") + "])"
}

// eachView applies fn to every layer's view and returns the new cache. An
// empty view is an error naming the layer.
func (c Cache) eachView(op string, fn func(l int, v View) (View, error)) (Cache, error) {
	views := make([]View, len(c.views))
	for l, v := range c.views {
		if v.IsEmpty() {
			return Cache{}, fmt.Errorf("%w: %s: layer %d is empty", ErrEmpty, op, l)
		}
		nv, err := fn(l, v)
		if err != nil {
			return Cache{}, fmt.Errorf("%s: layer %d: %w", op, l, err)
		}
		views[l] = nv
	}
	return Cache{views: views}, nil
}

// InsertIndex returns a cache whose every layer has index[slot+k] = index[k]
// (EasyDeL's insert_index, without mutating c). Rows [slot, slot+len(index))
// must exist (EasyDeL clamps the slot) and each value must be a position in
// [0, S]. A row whose index grows exposes positions its view never wrote:
// they keep whatever bytes the storage holds (zeros unless written before),
// and are frozen at that content, which costs O(growth) per row.
func (c Cache) InsertIndex(index []int32, slot int) (Cache, error) {
	return c.eachView("InsertIndex", func(_ int, v View) (View, error) { return v.withIndex(index, slot) })
}

// InsertStarts returns a cache whose every layer has starts[slot+k] =
// starts[k] (EasyDeL's insert_starts, without mutating c). Rows
// [slot, slot+len(starts)) must exist and each value must be in [0, S].
func (c Cache) InsertStarts(starts []int32, slot int) (Cache, error) {
	return c.eachView("InsertStarts", func(_ int, v View) (View, error) { return v.withStarts(starts, slot) })
}

// Insert returns a cache whose rows [slot, slot+B') hold other's B' rows, in
// every layer: key, value, index and starts (EasyDeL's insert, the
// prefill-to-decode-slot transfer, without mutating c). The rows' storage is
// shared with other, not copied; a later write to either cache copies only
// the chunk it changes. c's metadata is kept.
//
// other must have as many layers as c and, layer by layer, the same sequence
// length, heads, head dims and Storage (dtype and quantization); the slot
// must leave room for B' rows (EasyDeL clamps it and overwrites the last
// rows). Quantized rows are shared as stored, codes and scales (EasyDeL
// dequantizes both caches and re-quantizes the result).
func (c Cache) Insert(other Cache, slot int) (Cache, error) {
	if len(other.views) != len(c.views) {
		return Cache{}, fmt.Errorf("%w: Insert of a cache of %d layers into one of %d layers", ErrIncompatible, len(other.views), len(c.views))
	}
	return c.eachView("Insert", func(l int, v View) (View, error) {
		o := other.views[l]
		if o.IsEmpty() {
			return View{}, fmt.Errorf("%w: the inserted cache's layer is empty", ErrEmpty)
		}
		return v.insert(o, slot)
	})
}

// insert shares o's rows into v's rows [slot, slot+B').
func (v View) insert(o View, slot int) (View, error) {
	m, om := v.meta, o.meta
	if m.SequenceLength != om.SequenceLength || m.KeyHeads != om.KeyHeads || m.KeyDim != om.KeyDim ||
		m.ValueHeads != om.ValueHeads || m.ValueDim != om.ValueDim || v.Storage() != o.Storage() {
		return View{}, fmt.Errorf("%w: inserting key %s / value %s into key %s / value %s (want equal S, heads, dims, dtype and quantization)",
			ErrIncompatible, o.key, o.value, v.key, v.value)
	}
	if err := checkSlot(slot, om.BatchSize, m.BatchSize); err != nil {
		return View{}, err
	}
	perRow := v.key.NumChunks() / m.BatchSize // the same for key and value, codes and scales
	ks, vs := v.stores()
	oks, ovs := o.stores()
	ke, ve := ks.Edit(), vs.Edit()
	if err := ke.Share(slot*perRow, oks, 0, om.BatchSize*perRow); err != nil {
		return View{}, fmt.Errorf("%w: %v", ErrIncompatible, err)
	}
	if err := ve.Share(slot*perRow, ovs, 0, om.BatchSize*perRow); err != nil {
		return View{}, fmt.Errorf("%w: %v", ErrIncompatible, err)
	}
	next := v.withStores(ke.Store(), ve.Store())
	next.index = slices.Clone(v.index)
	copy(next.index[slot:], o.index)
	next.starts = slices.Clone(v.starts)
	copy(next.starts[slot:], o.starts)
	return next, nil
}

// PureView is one view in plain form: EasyDeL's [key, value, index, starts]
// list, plus the layer index (nil for none). The zero PureView stands for an
// empty view.
//
// A quantized view (see Storage) has Key and Value holding its codes
// (tensor.I8 for int8, tensor.U8 for packed NF4 codes) and KeyScales and
// ValueScales its scales or absmax, in the cache dtype: EasyDeL's pytree
// leaves key/weight + key/scale and key/packed + key/absmax. BlockSize is
// the NF4 block size (the requested one, as View.Storage reports it).
type PureView struct {
	Key, Value             tensor.Tensor
	Index, Starts          []int32
	LayerIndex             *int
	KeyScales, ValueScales tensor.Tensor
	BlockSize              int
}

// Pure is a cache in plain form, one PureView per layer (EasyDeL's to_pure
// output).
type Pure []PureView

// ToPure returns the cache's arrays and the metadata of its last non-empty
// view (EasyDeL's to_pure returns views[-1].metadata; the zero Metadata when
// no view is non-empty). The tensors are shared, not copied; Index and Starts
// are copies.
//
// Deviation from EasyDeL: each PureView keeps its view's layer index.
func (c Cache) ToPure() (Pure, Metadata) {
	p := make(Pure, len(c.views))
	var meta Metadata
	for i, v := range c.views {
		if v.IsEmpty() {
			continue
		}
		p[i] = PureView{Key: v.key, Value: v.value, Index: v.Index(), Starts: v.Starts(),
			KeyScales: v.KeyScales(), ValueScales: v.ValueScales(), BlockSize: v.Storage().BlockSize}
		if v.hasLayer {
			p[i].LayerIndex = Ptr(v.layer)
		}
		meta = v.Metadata()
	}
	return p, meta
}

// FromPure rebuilds a cache from its plain form, every view with meta
// (EasyDeL's from_pure). Each non-zero PureView must hold key
// (B, S, key_heads, key_dim) and value (B, S, value_heads, value_dim) of one
// dtype, and B index and starts positions in [0, S]; a zero PureView gives an
// empty view. A quantized view's PureView holds codes and scales of the
// shapes and dtypes Storage describes; the codes' dtype says which
// quantization (tensor.I8: int8, tensor.U8: NF4 with BlockSize).
//
// Tensors that already use the cache's chunk layout (those from ToPure) are
// shared; others are copied into it. A shared tensor is trusted to hold, in
// row b, the bytes its writer wrote at every position below Index[b] (true
// for ToPure's output): FromPure does not freeze positions that an edited
// Index exposes, as InsertIndex does.
//
// Deviation from EasyDeL: each view keeps PureView.LayerIndex (EasyDeL's
// from_pure sets layer_index to None).
func FromPure(p Pure, meta Metadata) (Cache, error) {
	if err := meta.Validate(); err != nil {
		return Cache{}, err
	}
	views := make([]View, len(p))
	for l, pv := range p {
		if pv.Key.IsZero() && pv.Value.IsZero() && pv.Index == nil && pv.Starts == nil {
			continue
		}
		v, err := viewFromParts(meta, pv)
		if err != nil {
			return Cache{}, fmt.Errorf("FromPure: layer %d: %w", l, err)
		}
		views[l] = v
	}
	return Cache{views: views}, nil
}

// viewFromParts validates and assembles a view.
func viewFromParts(meta Metadata, pv PureView) (View, error) {
	B, S := meta.BatchSize, meta.SequenceLength
	if pv.Key.IsZero() || pv.Value.IsZero() {
		return View{}, fmt.Errorf("%w: key %s and value %s must both be present", ErrDType, pv.Key, pv.Value)
	}
	if pv.Key.DType() != pv.Value.DType() {
		return View{}, fmt.Errorf("%w: key is %s, value is %s (want one dtype)", ErrDType, pv.Key.DType(), pv.Value.DType())
	}
	st := Storage{DType: pv.Key.DType()}
	switch pv.Key.DType() {
	case tensor.I8, tensor.U8:
		if pv.KeyScales.IsZero() || pv.KeyScales.DType() != pv.ValueScales.DType() {
			return View{}, fmt.Errorf("%w: %s codes need key and value scales of one dtype, got %s and %s",
				ErrDType, pv.Key.DType(), pv.KeyScales, pv.ValueScales)
		}
		st = Storage{DType: pv.KeyScales.DType(), Quantization: tensor.Int8}
		if pv.Key.DType() == tensor.I8 && pv.BlockSize != 0 {
			return View{}, fmt.Errorf("%w: block size %d given with int8 codes (it belongs to NF4 codes)", ErrQuantization, pv.BlockSize)
		}
		if pv.Key.DType() == tensor.U8 {
			st.Quantization, st.BlockSize = tensor.NF4, pv.BlockSize
			if pv.BlockSize <= 0 {
				return View{}, fmt.Errorf("%w: NF4 codes with block size %d (want a positive block)", ErrQuantization, pv.BlockSize)
			}
		}
	default:
		if pv.BlockSize != 0 {
			return View{}, fmt.Errorf("%w: block size %d given with %s values (it belongs to NF4 codes)", ErrQuantization, pv.BlockSize, pv.Key.DType())
		}
		if !pv.KeyScales.IsZero() || !pv.ValueScales.IsZero() {
			return View{}, fmt.Errorf("%w: scales %s and %s given with %s values (want int8 or uint8 codes)",
				ErrDType, pv.KeyScales, pv.ValueScales, pv.Key.DType())
		}
	}
	if err := st.Validate(); err != nil {
		return View{}, err
	}
	kf, vf, err := st.formats(meta)
	if err != nil {
		return View{}, err
	}
	for _, c := range []struct {
		name         string
		data, scales tensor.Tensor
		f            kvquant.Format
		h            int
	}{{"key", pv.Key, pv.KeyScales, kf, meta.KeyHeads}, {"value", pv.Value, pv.ValueScales, vf, meta.ValueHeads}} {
		if want := []int{B, S, c.h, c.f.DataPerRow()}; !c.data.HasShape(want...) {
			return View{}, fmt.Errorf("%w: %s has shape %v, want %v", ErrShape, c.name, c.data.Shape(), want)
		}
		if want := []int{B, S, c.h, c.f.ScalesPerRow()}; c.f.Quantized() && !c.scales.HasShape(want...) {
			return View{}, fmt.Errorf("%w: %s scales have shape %v, want %v", ErrShape, c.name, c.scales.Shape(), want)
		}
	}
	if err := checkPositions("index", pv.Index, B, S); err != nil {
		return View{}, err
	}
	if err := checkPositions("starts", pv.Starts, B, S); err != nil {
		return View{}, err
	}
	key, err := kvquant.Assemble(kf, layout(S, meta.KeyHeads), []int{B, S, meta.KeyHeads, meta.KeyDim}, pv.Key, pv.KeyScales, true)
	if err != nil {
		return View{}, fmt.Errorf("%w: key cache: %v", ErrShape, err)
	}
	value, err := kvquant.Assemble(vf, layout(S, meta.ValueHeads), []int{B, S, meta.ValueHeads, meta.ValueDim}, pv.Value, pv.ValueScales, true)
	if err != nil {
		return View{}, fmt.Errorf("%w: value cache: %v", ErrShape, err)
	}
	v := View{index: slices.Clone(pv.Index), starts: slices.Clone(pv.Starts), meta: meta.clone()}
	if st.Quantization != tensor.None {
		v.quant = &quantized{st: st, kf: kf, vf: vf}
	}
	v = v.withStores(key, value)
	if pv.LayerIndex != nil {
		v.layer, v.hasLayer = *pv.LayerIndex, true
	}
	return v, nil
}
