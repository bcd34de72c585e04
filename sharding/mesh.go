package sharding

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// The mesh axis names (EasyDeL's PartitionAxis defaults for
// data_parallel_axis, fully_sharded_data_parallel_axis,
// tensor_parallel_axis, sequence_parallel_axis and expert_parallel_axis).
const (
	// DP is the data-parallel mesh axis.
	DP = "dp"
	// FSDP is the fully-sharded data-parallel mesh axis.
	FSDP = "fsdp"
	// TP is the tensor-parallel mesh axis.
	TP = "tp"
	// SP is the sequence-parallel mesh axis.
	SP = "sp"
	// EP is the expert-parallel mesh axis.
	EP = "ep"
)

// MaxDevices bounds the number of devices of a mesh.
const MaxDevices = 1 << 20

// DefaultAxisOrder returns the mesh axis names in kvmesh's default device
// order: dp, fsdp, tp, sp, ep. It is a fresh slice.
func DefaultAxisOrder() []string { return []string{DP, FSDP, TP, SP, EP} }

// knownAxis reports whether name is one of the five mesh axis names.
func knownAxis(name string) bool { return slices.Contains(DefaultAxisOrder(), name) }

// Device is one device of a mesh.
type Device struct {
	// ID identifies the device (JAX's device id). IDs are unique within a
	// mesh; they need not be 0..n-1 or in order.
	ID int `json:"id"`
	// MemoryBytes is the device memory the caches may use, in bytes (the
	// role of JAX's bytes_reservable_limit).
	MemoryBytes int64 `json:"memory_bytes"`
}

// UniformDevices returns n devices with ids 0..n-1 and memoryBytes each.
func UniformDevices(n int, memoryBytes int64) []Device {
	d := make([]Device, n)
	for i := range d {
		d[i] = Device{ID: i, MemoryBytes: memoryBytes}
	}
	return d
}

// Axis is one named axis of a mesh and its size.
type Axis struct {
	// Name is one of DP, FSDP, TP, SP, EP.
	Name string `json:"name"`
	// Size is the number of devices along the axis.
	Size int `json:"size"`
}

// MeshConfig describes a device mesh. Build the Mesh with NewMesh.
type MeshConfig struct {
	// Sizes maps each mesh axis of the mesh to its size. The names must be
	// among DP, FSDP, TP, SP and EP; an axis that is not listed is not in
	// the mesh (a partition spec that names it is corrected to replicate).
	Sizes map[string]int `json:"sizes"`
	// Order is the device order: the axes of Sizes, each once, from the
	// slowest-varying to the fastest-varying. Nil means DefaultAxisOrder
	// (dp, fsdp, tp, sp, ep) restricted to the axes of Sizes.
	Order []string `json:"order,omitempty"`
	// Devices lists the devices in row-major order over Order: device i
	// sits at the coordinates of i written in mixed radix with the axis
	// sizes of Order, the last axis varying fastest (the layout of
	// numpy.reshape and of jax.sharding.Mesh's device array). Their count
	// must be the product of the sizes.
	Devices []Device `json:"devices"`
}

// order returns Order, or the default order restricted to Sizes.
func (c MeshConfig) order() []string {
	if c.Order != nil {
		return c.Order
	}
	var o []string
	for _, a := range DefaultAxisOrder() {
		if _, ok := c.Sizes[a]; ok {
			o = append(o, a)
		}
	}
	return o
}

// Validate checks the config: every axis name is one of the five mesh axis
// names and every size is positive (in the order dp, fsdp, tp, sp, ep, then
// unknown names in sorted order); Order, when given, lists each axis of
// Sizes exactly once; the number of devices is the product of the sizes
// (at most MaxDevices); device ids are unique and memory sizes are not
// negative. Each error names the value.
func (c MeshConfig) Validate() error {
	names := slices.Sorted(maps.Keys(c.Sizes))
	for _, a := range names {
		if !knownAxis(a) {
			return fmt.Errorf("%w: unknown mesh axis %q (want one of %s)", ErrMesh, a, strings.Join(DefaultAxisOrder(), ", "))
		}
	}
	for _, a := range DefaultAxisOrder() {
		if s, ok := c.Sizes[a]; ok && s <= 0 {
			return fmt.Errorf("%w: mesh axis %q has size %d, want > 0", ErrMesh, a, s)
		}
	}
	if c.Order != nil {
		seen := map[string]bool{}
		for _, a := range c.Order {
			if _, ok := c.Sizes[a]; !ok {
				return fmt.Errorf("%w: order %v names axis %q, which has no size", ErrMesh, c.Order, a)
			}
			if seen[a] {
				return fmt.Errorf("%w: order %v names axis %q twice", ErrMesh, c.Order, a)
			}
			seen[a] = true
		}
		if len(c.Order) != len(c.Sizes) {
			for _, a := range names {
				if !seen[a] {
					return fmt.Errorf("%w: order %v lacks axis %q", ErrMesh, c.Order, a)
				}
			}
		}
	}
	n := 1
	var terms []string
	for _, a := range c.order() {
		s := c.Sizes[a]
		if n > MaxDevices/s {
			return fmt.Errorf("%w: mesh sizes %v give more than %d devices", ErrMesh, c.Sizes, MaxDevices)
		}
		n *= s
		terms = append(terms, fmt.Sprintf("%s %d", a, s))
	}
	if len(c.Devices) != n {
		product := "no axes: 1"
		if len(terms) > 0 {
			product = strings.Join(terms, " x ") + fmt.Sprintf(" = %d", n)
		}
		return fmt.Errorf("%w: %d devices, want the product of the axis sizes (%s)", ErrMesh, len(c.Devices), product)
	}
	ids := make(map[int]int, n)
	for i, d := range c.Devices {
		if j, ok := ids[d.ID]; ok {
			return fmt.Errorf("%w: devices %d and %d both have id %d", ErrMesh, j, i, d.ID)
		}
		ids[d.ID] = i
		if d.MemoryBytes < 0 {
			return fmt.Errorf("%w: device %d (id %d) has negative memory %d bytes", ErrMesh, i, d.ID, d.MemoryBytes)
		}
	}
	return nil
}

// Mesh is a validated, immutable device mesh: named axes with sizes and
// the devices laid out over them in row-major order (see
// MeshConfig.Devices). Devices are addressed by their index in that order
// (0..NumDevices-1); Index maps a device id to it. The zero Mesh has no
// axes and no devices and is not usable.
type Mesh struct {
	axes    []Axis
	strides []int
	devices []Device
	byID    map[int]int
}

// NewMesh validates c and returns the mesh.
func NewMesh(c MeshConfig) (Mesh, error) {
	if err := c.Validate(); err != nil {
		return Mesh{}, err
	}
	order := c.order()
	m := Mesh{
		axes:    make([]Axis, len(order)),
		strides: make([]int, len(order)),
		devices: slices.Clone(c.Devices),
		byID:    make(map[int]int, len(c.Devices)),
	}
	stride := 1
	for i := len(order) - 1; i >= 0; i-- {
		m.axes[i] = Axis{Name: order[i], Size: c.Sizes[order[i]]}
		m.strides[i] = stride
		stride *= m.axes[i].Size
	}
	for i, d := range m.devices {
		m.byID[d.ID] = i
	}
	return m, nil
}

// Config returns the config the mesh was built from, with an explicit
// Order.
func (m Mesh) Config() MeshConfig {
	c := MeshConfig{Sizes: make(map[string]int, len(m.axes)), Order: make([]string, len(m.axes)), Devices: slices.Clone(m.devices)}
	for i, a := range m.axes {
		c.Sizes[a.Name] = a.Size
		c.Order[i] = a.Name
	}
	return c
}

// Axes returns the mesh axes in device order (slowest-varying first).
func (m Mesh) Axes() []Axis { return slices.Clone(m.axes) }

// axisPos returns the position of axis name in the device order, or -1.
func (m Mesh) axisPos(name string) int {
	for i, a := range m.axes {
		if a.Name == name {
			return i
		}
	}
	return -1
}

// Has reports whether the mesh has an axis called name.
func (m Mesh) Has(name string) bool { return m.axisPos(name) >= 0 }

// Size returns the size of axis name; 1 for an axis that is not in the
// mesh (every device sits at coordinate 0 of it).
func (m Mesh) Size(name string) int {
	if i := m.axisPos(name); i >= 0 {
		return m.axes[i].Size
	}
	return 1
}

// NumDevices returns the number of devices.
func (m Mesh) NumDevices() int { return len(m.devices) }

// Devices returns the devices in device order.
func (m Mesh) Devices() []Device { return slices.Clone(m.devices) }

// Device returns device i (in device order). It panics if i is out of
// range: that is a programmer error.
func (m Mesh) Device(i int) Device { return m.devices[i] }

// Index returns the position of the device with the given id in device
// order.
func (m Mesh) Index(id int) (int, error) {
	i, ok := m.byID[id]
	if !ok {
		return 0, fmt.Errorf("%w: no device with id %d in a mesh of %d devices", ErrMesh, id, len(m.devices))
	}
	return i, nil
}

// Coords returns the coordinates of device i, one per mesh axis in device
// order. It panics if i is out of range.
func (m Mesh) Coords(i int) []int {
	if i < 0 || i >= len(m.devices) {
		panic(fmt.Sprintf("sharding: device index %d out of range [0, %d)", i, len(m.devices)))
	}
	c := make([]int, len(m.axes))
	for k, a := range m.axes {
		c[k] = i / m.strides[k] % a.Size
	}
	return c
}

// Coord returns the coordinate of device i on axis name: 0 for an axis
// that is not in the mesh. It panics if i is out of range.
func (m Mesh) Coord(i int, name string) int {
	if i < 0 || i >= len(m.devices) {
		panic(fmt.Sprintf("sharding: device index %d out of range [0, %d)", i, len(m.devices)))
	}
	k := m.axisPos(name)
	if k < 0 {
		return 0
	}
	return i / m.strides[k] % m.axes[k].Size
}

// At returns the index of the device at the given coordinates, keyed by
// axis name; an axis left out is coordinate 0.
func (m Mesh) At(coords map[string]int) (int, error) {
	i := 0
	for name, c := range coords {
		k := m.axisPos(name)
		if k < 0 {
			return 0, fmt.Errorf("%w: coordinate on axis %q, which is not in the mesh %s", ErrMesh, name, m)
		}
		if c < 0 || c >= m.axes[k].Size {
			return 0, fmt.Errorf("%w: coordinate %d on axis %q of size %d", ErrMesh, c, name, m.axes[k].Size)
		}
		i += c * m.strides[k]
	}
	return i, nil
}

// String describes the mesh as "Mesh(dp=2, tp=4)".
func (m Mesh) String() string {
	parts := make([]string, len(m.axes))
	for i, a := range m.axes {
		parts[i] = fmt.Sprintf("%s=%d", a.Name, a.Size)
	}
	return "Mesh(" + strings.Join(parts, ", ") + ")"
}
