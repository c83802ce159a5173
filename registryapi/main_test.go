package registryapi

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: the handler must not leave work
// behind after a response, aborted ones included.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
