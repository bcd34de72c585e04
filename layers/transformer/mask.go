package transformer

import (
	"fmt"
	"slices"
	"strings"
)

// Mask is a boolean attention mask: Data holds the elements of Shape in
// row-major order, true meaning "may attend". The zero Mask (nil Shape and
// Data) means "no mask".
//
// Masks are values: the package never changes the slices of a Mask it is
// given, and every Mask it returns has slices of its own.
type Mask struct {
	Shape []int
	Data  []bool
}

// NewMask returns a mask of the given shape holding copies of shape and data.
// len(data) must be the product of shape, and no dimension may be negative.
func NewMask(shape []int, data []bool) (Mask, error) {
	n, err := maskElements(shape)
	if err != nil {
		return Mask{}, err
	}
	if len(data) != n {
		return Mask{}, fmt.Errorf("%w: mask of shape %v needs %d values, got %d", ErrShape, shape, n, len(data))
	}
	return Mask{Shape: slices.Clone(shape), Data: slices.Clone(data)}, nil
}

// CausalMask returns the (1, 1, n, n) lower-triangular mask: query i may
// attend key j when j <= i. It panics if n is negative.
func CausalMask(n int) Mask {
	if n < 0 {
		panic(fmt.Sprintf("transformer: CausalMask(%d)", n))
	}
	m := Mask{Shape: []int{1, 1, n, n}, Data: make([]bool, n*n)}
	for i := 0; i < n; i++ {
		for j := 0; j <= i; j++ {
			m.Data[i*n+j] = true
		}
	}
	return m
}

// fullMask returns a mask of shape with every element true.
func fullMask(shape ...int) Mask {
	n, _ := maskElements(shape)
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return Mask{Shape: shape, Data: d}
}

func maskElements(shape []int) (int, error) {
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: dimension %d of mask shape %v is negative", ErrShape, i, shape)
		}
		if d > 0 && n > (1<<40)/d {
			return 0, fmt.Errorf("%w: mask shape %v has too many elements", ErrShape, shape)
		}
		n *= d
	}
	return n, nil
}

// IsZero reports whether m is the zero Mask ("no mask").
func (m Mask) IsZero() bool { return m.Shape == nil && m.Data == nil }

// Rank returns the number of dimensions.
func (m Mask) Rank() int { return len(m.Shape) }

// valid reports whether Data fits Shape.
func (m Mask) valid() error {
	n, err := maskElements(m.Shape)
	if err != nil {
		return err
	}
	if len(m.Data) != n {
		return fmt.Errorf("%w: mask of shape %v holds %d values (want %d)", ErrShape, m.Shape, len(m.Data), n)
	}
	return nil
}

// At returns the element at idx. It panics if idx does not address an
// element: that is a programmer error.
func (m Mask) At(idx ...int) bool {
	if len(idx) != len(m.Shape) {
		panic(fmt.Sprintf("transformer: %d indices for mask shape %v", len(idx), m.Shape))
	}
	off := 0
	for i, x := range idx {
		if x < 0 || x >= m.Shape[i] {
			panic(fmt.Sprintf("transformer: index %v out of range for mask shape %v", idx, m.Shape))
		}
		off = off*m.Shape[i] + x
	}
	return m.Data[off]
}

// Equal reports whether m and o have the same shape and elements.
func (m Mask) Equal(o Mask) bool {
	return slices.Equal(m.Shape, o.Shape) && slices.Equal(m.Data, o.Data)
}

// String draws the mask as text: one line per row of the last dimension, "x"
// for true and "." for false. The rows of each matrix formed by the last two
// dimensions are consecutive lines, and matrices (one per index of the
// leading dimensions, e.g. one per batch row of a (B, 1, q, S) mask) are
// separated by an empty line. A (B, S) mask draws one line per batch row.
// The zero Mask draws as "<no mask>".
func (m Mask) String() string {
	if m.IsZero() {
		return "<no mask>"
	}
	if m.valid() != nil {
		return fmt.Sprintf("<invalid mask: shape %v, %d values>", m.Shape, len(m.Data))
	}
	if len(m.Shape) == 0 {
		return cell(m.Data[0])
	}
	cols := m.Shape[len(m.Shape)-1]
	rowsPerBlock := 1
	if len(m.Shape) >= 2 {
		rowsPerBlock = m.Shape[len(m.Shape)-2]
	}
	var b strings.Builder
	rows := 0
	if cols > 0 {
		rows = len(m.Data) / cols
	}
	for r := 0; r < rows; r++ {
		if r > 0 {
			b.WriteByte('\n')
			if r%rowsPerBlock == 0 {
				b.WriteByte('\n')
			}
		}
		for _, v := range m.Data[r*cols : (r+1)*cols] {
			b.WriteString(cell(v))
		}
	}
	return b.String()
}

func cell(v bool) string {
	if v {
		return "x"
	}
	return "."
}
