package testkit

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Validator is a metadata configuration or a metadata: a value whose
// Validate runs NewMetadata's checks.
type Validator interface{ Validate() error }

// NewMetadataCase runs newMeta (a package's NewMetadata) on cfg as the
// subtest name, and requires cfg.Validate to give the same error. With
// want "" the metadata must pass its own Validate and then check; else the
// error must wrap sentinel (the package's ErrMetadata) and contain want,
// and the metadata be the zero value.
func NewMetadataCase[C, M Validator](t *testing.T, name string, cfg C, want string, newMeta func(C) (M, error), sentinel error, check func(t *testing.T, m M)) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		m, err := newMeta(cfg)
		assert.Equal(t, err, cfg.Validate(), "Validate and NewMetadata agree")
		if want == "" {
			require.NoError(t, err)
			require.NoError(t, m.Validate())
			check(t, m)
			return
		}
		require.ErrorIs(t, err, sentinel)
		assert.Contains(t, err.Error(), want)
		assert.Zero(t, m)
	})
}
