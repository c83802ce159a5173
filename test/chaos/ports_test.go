package chaos

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
)

// Nodes in these tests are killed and restarted at the addresses they had, so those ports must
// stay theirs while they are down. A port from the kernel's ephemeral range (what listening on
// port 0 gives) does not: another fixed address picked the same way may be handed the same port
// once its probe listener closed, and any outgoing connection of any process may take it as its
// local port. So fixed addresses come from below that range, each picked once per test binary.
var (
	portsMu sync.Mutex
	taken   = map[int]bool{}
)

// fixedAddr is a 127.0.0.1 address with a free port below the ephemeral range, never given out
// twice by this test binary.
func fixedAddr(t *testing.T) string {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &lo, &hi); err == nil && lo > 12000 {
			low = lo
		}
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := 10000 + rand.IntN(low-10000)
		if taken[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		_ = l.Close()
		taken[port] = true
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}
