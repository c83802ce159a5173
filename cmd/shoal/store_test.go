package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/agent/store/layout"
	"github.com/shoal-oci/shoal/agent/store/verify"
)

// TestStoreVerify runs `shoal store verify` over a data directory: clean (exit 0, JSON report),
// refused while a store has it open, damaged (exit 1, the object named), repaired (exit 1, the
// object removed), then clean again.
func TestStoreVerify(t *testing.T) {
	dir := t.TempDir()
	s, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("some committed content")
	d := digest.FromBytes(body)
	w, err := s.NewWriter(d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(""); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if out, err := run(t, "store", "verify", "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("verify of an open store: %v\n%s", err, out)
	}
	s.Close()

	out, err := run(t, "store", "verify", "--data-dir", dir, "--json")
	if err != nil {
		t.Fatalf("verify of a clean store: %v\n%s", err, out)
	}
	var rep verify.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Objects) != 1 || !rep.Objects[0].OK {
		t.Fatalf("report %v: %s", err, out)
	}

	if err := os.WriteFile(layout.BlobPath(dir, d), []byte("Some committed content"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "store", "verify", "--data-dir", dir, "--quiet")
	if err == nil || !strings.Contains(out, "BAD      "+string(d)) {
		t.Fatalf("verify of a damaged object: %v\n%s", err, out)
	}
	out, err = run(t, "store", "verify", "--data-dir", dir, "--repair")
	if err == nil || !strings.Contains(out, "REMOVED  "+string(d)) {
		t.Fatalf("repair: %v\n%s", err, out)
	}
	if _, err := os.Stat(layout.BlobPath(dir, d)); !os.IsNotExist(err) {
		t.Fatalf("the damaged object is still there: %v", err)
	}
	if out, err := run(t, "store", "verify", "--data-dir", dir); err != nil || !strings.Contains(out, "0 objects, 0 bad") {
		t.Fatalf("verify after the repair: %v\n%s", err, out)
	}
}
