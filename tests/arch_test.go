package tests

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// corePackages are the packages that must stay plain, synchronous Go
// (DESIGN.md section 1).
var corePackages = []string{"./layers/...", "./pagemanager/...", "./sharding/..."}

// forbidden returns the import paths in deps that a core package must not
// reach: protoactor, or kvmesh's own actors and messages packages.
func forbidden(deps []string) []string {
	var bad []string
	for _, d := range deps {
		if strings.Contains(d, "protoactor-go") ||
			strings.HasPrefix(d, "github.com/kvmesh/kvmesh/actors") ||
			strings.HasPrefix(d, "github.com/kvmesh/kvmesh/messages") {
			bad = append(bad, d)
		}
	}
	return bad
}

func TestForbiddenMatchesWhatItShould(t *testing.T) {
	deps := []string{
		"fmt",
		"github.com/kvmesh/kvmesh/layers/tensor",
		"github.com/asynkron/protoactor-go/actor",
		"github.com/kvmesh/kvmesh/actors",
		"github.com/kvmesh/kvmesh/actors/cluster",
		"github.com/kvmesh/kvmesh/messages",
		"github.com/kvmesh/kvmesh/messagesfoo/x", // prefix match is deliberate: no such package may exist either
	}
	assert.Equal(t, deps[2:], forbidden(deps))
}

func TestCoreImportsNoActors(t *testing.T) {
	for _, pattern := range corePackages {
		cmd := exec.Command("go", "list", "-e", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pattern)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go list %s: %s", pattern, out)
		deps := strings.Fields(string(out))
		if strings.Contains(string(out), "matched no packages") {
			continue
		}
		assert.Empty(t, forbidden(deps), "%s must not depend on actors, messages or protoactor", pattern)
	}
}

func TestCorePackagesExist(t *testing.T) {
	// Guards the test above against silently checking nothing.
	cmd := exec.Command("go", "list", "./layers/...", "./pagemanager/...")
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, pkg := range []string{"layers/tensor", "layers/transformer", "layers/paged", "pagemanager"} {
		assert.Contains(t, string(out), "github.com/kvmesh/kvmesh/"+pkg+"\n")
	}
}
