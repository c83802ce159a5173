package archive_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: pushes run in an errgroup, and
// each Import or Export must close the connections it opened.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
