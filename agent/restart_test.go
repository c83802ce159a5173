package agent_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-oci/shoal/agent"
)

// A fetch cut short by a shutdown resumes after the restart from the chunks it holds: they are
// verified again against the recorded map, the origin is asked only for the rest, and the blob
// comes out whole. A chunk damaged on disk meanwhile is fetched again, not served.
func TestPartialFetchSurvivesRestart(t *testing.T) {
	o := startOrigin(t)
	data, d := randomBlob(t, 8<<20)
	pushBlob(t, o, "test/big", data, d)
	dir := t.TempDir()
	cfg := agent.Config{DataDir: dir, Registries: []string{o.URL()}, ChunkSize: 1 << 20, PieceSize: 1 << 20}
	slow := cfg
	slow.MaxDownloadRate = 2 << 20
	n := startAgentConfig(t, slow)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = getBlob(t, n.host, "test/big", d) // cut short by the shutdown
	}()
	partial := filepath.Join(dir, "partial", "sha256-"+d.Encoded())
	waitFor(t, func() bool { st, err := os.Stat(partial); return err == nil && st.Size() >= 4<<20 }, "4 MiB to land")
	n.stop()
	<-done
	if _, err := os.Stat(partial); err != nil {
		t.Fatalf("the partial file is gone after the shutdown: %v", err)
	}
	// Damage chunk 1 on disk: the resume must notice and fetch it again.
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damage"), 1<<20+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before := o.BytesServed()

	n2 := startAgentConfig(t, cfg)
	body, err := getBlob(t, n2.host, "test/big", d)
	if err != nil || !bytes.Equal(body, data) {
		t.Fatalf("pull after the restart: %v", err)
	}
	// Chunk 0 survived; chunk 1 was damaged, so the origin resumes at 1 MiB, not 0.
	sent := o.BytesServed() - before
	// Besides blob bytes, the origin answers the restarted node's privacy probe (a HEAD, whose
	// error body the test registry counts): a few hundred bytes at most.
	if sent > int64(len(data))-1<<20+1<<10 {
		t.Fatalf("the origin sent %d bytes after the restart; the resume should have saved chunk 0", sent)
	}
	// The client's last byte goes out once the blob verifies; the commit (fsync, rename)
	// follows it.
	committed := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	waitFor(t, func() bool { _, err := os.Stat(committed); return err == nil }, "the commit")
	stored, err := os.ReadFile(committed)
	if err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored content: %v", err)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("the partial file is still there after the commit: %v", err)
	}
}
