package agent_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if goroutines outlive the tests: every fetch, server and origin
// connection the agent starts must end with it. Idle keep-alive connections of the test clients'
// own transports are not the agent's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
