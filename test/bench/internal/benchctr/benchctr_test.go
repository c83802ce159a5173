package benchctr

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/shoal-oci/shoal/test/bench/internal/benchorigin"
	"github.com/shoal-oci/shoal/test/bench/internal/benchruntime"
)

func local(bin string, args ...string) *exec.Cmd {
	c := exec.Command(bin, args...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

// TestFetchGoesThroughTheMirror fetches an image whose registry's own server refuses every
// connection, so that only the hosts.toml mirror (a real registry) can serve it, and checks that
// containerd's content store then holds every blob.
func TestFetchGoesThroughTheMirror(t *testing.T) {
	for _, b := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s: %v", b, err)
			}
			t.Skipf("%s: %v", b, err)
		}
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("containerd needs root, and CI runs as root")
		}
		t.Skip("containerd needs root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	im, err := benchruntime.MakeImage(filepath.Join(dir, "blobs"), 3<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	o, err := benchorigin.Start(filepath.Join(dir, "blobs"), benchorigin.Pacing{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	if err := im.Push(ctx, o.URL()); err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, local, filepath.Join(dir, "ctrd"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	const registry = "bench.invalid:5000"
	if err := c.Mirror(registry, "http://127.0.0.1:1", o.URL()); err != nil {
		t.Fatal(err)
	}
	r := c.Fetch(ctx, registry+"/"+benchruntime.Repository+":"+benchruntime.Tag)
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	if o.BlobGets(im.Layers[0].Digest) != 1 {
		t.Errorf("the mirror served layer 0 %d times, want 1", o.BlobGets(im.Layers[0].Digest))
	}
	out, err := exec.Command("ctr", "--address", c.Socket, "content", "ls", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("ctr content ls: %v: %s", err, out)
	}
	for _, d := range append([]benchruntime.Descriptor{im.Config}, im.Layers...) {
		if !strings.Contains(string(out), d.Digest) {
			t.Errorf("containerd's store lacks %s:\n%s", d.Digest, out)
		}
	}
}
