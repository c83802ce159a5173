package realclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/shoal-oci/shoal/test/testutil"
	"github.com/shoal-oci/shoal/test/testutil/origins"
)

const mib = 1 << 20

// storeUsage is the store part of a node's /shoal/v1/status.
type storeUsage struct {
	Bytes   int64 `json:"bytes"`
	Pending int64 `json:"pending"`
	Objects int64 `json:"objects"`
}

func nodeStatus(t *testing.T, n *testutil.Agent) (usage storeUsage, transfers int) {
	t.Helper()
	resp, err := http.Get(n.URL + "/shoal/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Store     storeUsage        `json:"store"`
		Transfers []json.RawMessage `json:"transfers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status: %v", err)
	}
	return st.Store, len(st.Transfers)
}

// checkStore checks what a node's data directory holds after a failure: nothing under tmp/ or
// partial/, every committed file verifies against its name, and the usage the node reports is
// what blobs/ holds, with nothing pending.
func checkStore(t *testing.T, n *testutil.Agent) {
	t.Helper()
	for _, sub := range []string{"tmp", "partial"} {
		es, err := os.ReadDir(filepath.Join(n.DataDir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			t.Errorf("%s/%s is left behind", sub, e.Name())
		}
	}
	var bytes, objects int64
	var digests []string
	err := filepath.WalkDir(filepath.Join(n.DataDir, "blobs"), func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		bytes += info.Size()
		objects++
		digests = append(digests, filepath.Base(filepath.Dir(p))+":"+de.Name())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, corrupt, err := n.Committed(digests...); err != nil || len(corrupt) > 0 {
		t.Errorf("committed content that does not verify: %v (%v)", corrupt, err)
	}
	usage, _ := nodeStatus(t, n)
	if usage.Bytes != bytes || usage.Objects != objects || usage.Pending != 0 {
		t.Errorf("the node reports %+v; blobs/ holds %d bytes in %d objects", usage, bytes, objects)
	}
}

// waitIdle waits until the node has no transfer in flight.
func waitIdle(t *testing.T, n *testutil.Agent) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, transfers := nodeStatus(t, n); transfers == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("transfers still in flight after a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getBlob GETs a blob through a node, returning the status, the body read (up to an error) and
// the error that cut it short.
func getBlob(ctx context.Context, base, repo, d string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+repo+"/blobs/"+d, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// ociError decodes an OCI error body's first code.
func ociError(body []byte) string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func layerOf(t *testing.T, img v1.Image) (string, []byte) {
	t.Helper()
	for d, b := range testutil.LayerBytes(t, img) {
		return d, b
	}
	t.Fatal("no layer")
	return "", nil
}

// An agent whose data directory is a 64 MiB disk: a blob larger than the disk is refused with a
// clean OCI error before a byte is sent; a pull that fills the disk midway fails and frees what
// it wrote; meanwhile the agent serves what it holds; the usage it reports stays what its store
// holds; and once there is room again the same pull works.
func TestAgentDiskFull(t *testing.T) {
	bin := shoal.Path(t)
	dir := testutil.Tmpfs(t, 64*mib)
	o := origins.StartDockerRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kept := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 8*mib)
	big := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 80*mib)
	mid := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 24*mib)
	for tag, img := range map[string]v1.Image{"kept": kept, "big": big, "mid": mid} {
		testutil.Push(ctx, t, o.Addr+"/test/disk:"+tag, img)
	}
	// Slow enough that the disk can be filled while the mid-sized layer arrives.
	a := testutil.StartAgent(t, bin, []string{o.URL}, "--data-dir", dir, "--max-download-rate", "8MiB")
	a.DataDir = dir

	pull := func(img v1.Image, tag string) error { return pullSame(ctx, t, a.Addr+"/test/disk:"+tag, img) }
	if err := pull(kept, "kept"); err != nil {
		t.Fatalf("pulling the first image: %v", err)
	}
	checkStore(t, a)

	// Larger than the disk: refused before a byte, with an OCI error a runtime falls back on.
	bigLayer, _ := layerOf(t, big)
	status, body, err := getBlob(ctx, a.URL, "test/disk", bigLayer)
	if err != nil || status != http.StatusInsufficientStorage || ociError(body) == "" {
		t.Errorf("GET of a blob larger than the disk: %d %q (%v), want 507 and an OCI error", status, body, err)
	}
	waitIdle(t, a)
	checkStore(t, a)

	// The disk fills up while a blob arrives: the response is cut short, and what the fetch
	// wrote is freed.
	midLayer, midBytes := layerOf(t, mid)
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		status, body, err := getBlob(ctx, a.URL, "test/disk", midLayer)
		done <- result{status, body, err}
	}()
	partial := filepath.Join(dir, "partial", strings.Replace(midLayer, ":", "-", 1))
	deadline := time.Now().Add(time.Minute)
	for {
		if info, err := os.Stat(partial); err == nil && info.Size() >= 2*mib {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the blob never started to land")
		}
		time.Sleep(20 * time.Millisecond)
	}
	filler := filepath.Join(dir, "filler")
	testutil.FillDisk(t, filler, 0)
	r := <-done
	if r.err == nil && r.status == http.StatusOK && bytes.Equal(r.body, midBytes) {
		t.Fatal("the whole blob arrived on a full disk")
	}
	if r.status == http.StatusOK && r.err == nil && len(r.body) == len(midBytes) {
		t.Error("a full-length response with wrong bytes")
	}
	waitIdle(t, a)
	checkStore(t, a)
	// With the disk still full, the agent serves what it holds.
	if err := pull(kept, "kept"); err != nil {
		t.Errorf("pulling held content with the disk full: %v", err)
	}

	// Room again: the same pull works.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := pull(mid, "mid"); err != nil {
		t.Fatalf("pulling again once there is room: %v", err)
	}
	checkStore(t, a)
	if missing, corrupt, err := a.Committed(midLayer); len(missing)+len(corrupt) > 0 || err != nil {
		t.Errorf("after the pull: missing %v, corrupt %v (%v)", missing, corrupt, err)
	}
}

// A seed whose data directory is a 64 MiB disk: a push larger than the room left fails with a
// clean error the client reports (507), commits nothing and leaves no upload behind; the seed
// serves what it holds meanwhile, its usage stays what its store holds, and once there is room
// the same push works.
func TestSeedDiskFull(t *testing.T) {
	bin := shoal.Path(t)
	dir := testutil.Tmpfs(t, 64*mib)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := testutil.StartSeed(t, bin, []string{"none"}, "--data-dir", dir)
	s.DataDir = dir

	push := func(img v1.Image, tag string) error {
		ref, err := name.ParseReference(s.Addr+"/site/app:"+tag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return remote.Write(ref, img, remote.WithContext(ctx))
	}
	pull := func(img v1.Image, tag string) error { return pullSame(ctx, t, s.Addr+"/site/app:"+tag, img) }
	kept := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 8*mib)
	if err := push(kept, "kept"); err != nil {
		t.Fatalf("pushing the first image: %v", err)
	}
	checkStore(t, s)

	noSpace := func(err error) bool {
		var te *transport.Error
		return errors.As(err, &te) && te.StatusCode == http.StatusInsufficientStorage
	}
	big := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 80*mib)
	if err := push(big, "big"); !noSpace(err) {
		t.Errorf("pushing an image larger than the disk: %v, want a 507", err)
	}
	checkStore(t, s)

	// Little room left: a push that does not fit fails, and once there is room it works.
	filler := filepath.Join(dir, "filler")
	testutil.FillDisk(t, filler, 12*mib)
	mid := testutil.NewImage(t, testutil.OCI, testutil.Linux("amd64"), 1, 24*mib)
	if err := push(mid, "mid"); !noSpace(err) {
		t.Errorf("pushing past the room left: %v, want a 507", err)
	}
	checkStore(t, s)
	if err := pull(kept, "kept"); err != nil {
		t.Errorf("pulling held content with the disk full: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := push(mid, "mid"); err != nil {
		t.Fatalf("pushing again once there is room: %v", err)
	}
	if err := pull(mid, "mid"); err != nil {
		t.Fatalf("pulling the pushed image: %v", err)
	}
	checkStore(t, s)
}

// pullSame pulls ref and checks that its layers are img's, byte for byte.
func pullSame(ctx context.Context, t *testing.T, ref string, img v1.Image) error {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	want := testutil.LayerBytes(t, img)
	for d, b := range testutil.LayerBytes(t, got) {
		if !bytes.Equal(b, want[d]) {
			return fmt.Errorf("layer %s differs", d)
		}
	}
	return nil
}
