package vault

import (
	"testing"

	"go.uber.org/goleak"
)

// The package starts no goroutines; keep it that way.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
