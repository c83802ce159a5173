package hosted

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: uploads, expiry and the servers
// the tests start must all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
