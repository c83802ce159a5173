package demo

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"
)

// The README's first command: three nodes share the image and the origin serves each blob once.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	m := regexp.MustCompile(`The origin served (\d+) blob GETs for (\d+) blobs`).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] {
		t.Fatalf("origin did not serve each blob once:\n%s", out.String())
	}
	// Nodes 2 and 3 took no layer byte from the origin: each came from peers or, on a node that
	// coordinated a blob's fetch for node 1, from its own store.
	rows := regexp.MustCompile(`(?m)^\s+(\d)\s+(\d)\s+\S+\s+(\S+ \S+)\s+(\S+ \S+)\s+(\S+ \S+)\s*$`).FindAllStringSubmatch(out.String(), -1)
	if len(rows) != 4 {
		t.Fatalf("want 4 pull rows, got %d:\n%s", len(rows), out.String())
	}
	for _, r := range rows[1:3] {
		if r[5] != "0 B" || (r[4] == "0 B" && r[3] == "0 B") {
			t.Errorf("pull %s through node %s: cache %s, peers %s, origin %s", r[1], r[2], r[3], r[4], r[5])
		}
	}
	if rows[3][3] == "0 B" {
		t.Errorf("node 1's second pull did not come from its store: %v", rows[3])
	}
}
