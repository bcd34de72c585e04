package paged

// floorDiv returns a/b rounded toward negative infinity, as Python's and
// jnp's // do (Go's / truncates toward zero). b must be positive.
func floorDiv(a, b int) int {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// floorMod returns a - b*floorDiv(a, b), which lies in [0, b) for a
// positive b, as Python's and jnp's % do.
func floorMod(a, b int) int {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}
