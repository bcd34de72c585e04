//go:build !race

package budget

// raceBuild reports a race-detector build (see race.go).
const raceBuild = false
