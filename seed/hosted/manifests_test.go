package hosted

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-oci/shoal/agent/store"
	"github.com/shoal-oci/shoal/internal/errdefs"
	"github.com/shoal-oci/shoal/internal/oci"
	"github.com/shoal-oci/shoal/registryapi"
)

func TestManifestByTagAndDigest(t *testing.T) {
	t.Parallel()
	var (
		mu        sync.Mutex
		committed []digest.Digest
	)
	s := newSeed(t, WithCommitHook(func(d digest.Digest) {
		mu.Lock()
		defer mu.Unlock()
		committed = append(committed, d)
	}))
	body := s.image(t, repo, "layer one")
	d := digest.FromBytes(body)

	r := s.pushManifest(t, repo, "v1", mtManifest, body)
	expect(t, "PUT by tag", r, http.StatusCreated, "")
	if r.header.Get("Docker-Content-Digest") != d.String() || r.header.Get("Location") != "/v2/"+repo+"/manifests/"+d.String() {
		t.Errorf("PUT by tag: digest %q Location %q", r.header.Get("Docker-Content-Digest"), r.header.Get("Location"))
	}
	for _, ref := range []string{"v1", d.String()} {
		g := s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil)
		expect(t, "GET "+ref, g, http.StatusOK, "")
		if !bytes.Equal(g.body, body) || g.header.Get("Content-Type") != mtManifest || g.header.Get("Docker-Content-Digest") != d.String() {
			t.Errorf("GET %s: %s %q", ref, g.header.Get("Content-Type"), g.body)
		}
	}
	gotD, mt, pushed, ok := s.reg.ResolveTag(repo, "v1")
	if !ok || gotD != d || mt != mtManifest || pushed.IsZero() {
		t.Errorf("ResolveTag = %s %s %v %v", gotD, mt, pushed, ok)
	}
	if _, _, _, ok := s.reg.ResolveTag(repo, "v2"); ok {
		t.Error("ResolveTag of an unknown tag succeeded")
	}
	mu.Lock()
	told := slices.Contains(committed, d)
	mu.Unlock()
	if !told {
		t.Error("the commit hook was not told about the manifest")
	}

	// By digest, tagging with ?tag= on the way (distribution-spec 1.1+dev).
	r = s.do(t, http.MethodPut, "/v2/"+repo+"/manifests/"+d.String()+"?tag=a&tag=b", body, "Content-Type: "+mtManifest)
	expect(t, "PUT by digest", r, http.StatusCreated, "")
	if tags := r.header.Values("OCI-Tag"); !slices.Equal(tags, []string{"a", "b"}) {
		t.Errorf("OCI-Tag = %v", tags)
	}
	if _, _, _, ok := s.reg.ResolveTag(repo, "b"); !ok {
		t.Error("?tag=b did not tag the manifest")
	}
}

func TestBadManifests(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	body := s.image(t, repo, "layer")
	missingLayer := manifestJSON(t, desc{MediaType: mtConfig, Digest: digest.FromString("{}"), Size: 2}, nil, nil, "")
	otherRepo := newSeed(t).image(t, "team/other", "elsewhere") // blobs of another seed entirely
	child := digest.FromString("child manifest never pushed")
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": mtIndex, "manifests": []desc{{MediaType: mtManifest, Digest: child, Size: 10}}})
	badDesc := []byte(`{"schemaVersion":2,"mediaType":"` + mtManifest + `","config":{"mediaType":"x","digest":"sha256:short","size":1},"layers":[]}`)

	tests := []struct {
		name, ref, mediaType string
		body                 []byte
		status               int
		code                 string
	}{
		{"missing config", "t1", mtManifest, missingLayer, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"},
		{"blobs of another repository", "t2", mtManifest, otherRepo, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"},
		{"index with a missing child", "t3", mtIndex, index, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN"},
		{"not JSON", "t4", mtManifest, []byte("not json"), http.StatusBadRequest, "MANIFEST_INVALID"},
		{"JSON but no object", "t5", mtManifest, []byte(`[1,2]`), http.StatusBadRequest, "MANIFEST_INVALID"},
		{"media type disagrees", "t6", mtIndex, body, http.StatusBadRequest, "MANIFEST_INVALID"},
		{"malformed descriptor digest", "t7", mtManifest, badDesc, http.StatusBadRequest, "MANIFEST_INVALID"},
		{"wrong digest", digest.FromString("x").String(), mtManifest, body, http.StatusBadRequest, "DIGEST_INVALID"},
		{"malformed digest", "sha256:1234", mtManifest, body, http.StatusBadRequest, "DIGEST_INVALID"},
		{"malformed tag", "-bad", mtManifest, body, http.StatusBadRequest, "MANIFEST_INVALID"},
		{"too large", "t8", mtManifest, append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), oci.MaxManifestSize)...), `"}`...), http.StatusRequestEntityTooLarge, "SIZE_INVALID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			expect(t, "PUT", s.pushManifest(t, repo, tc.ref, tc.mediaType, tc.body), tc.status, tc.code)
		})
	}
	var tags struct{ Tags []string }
	if err := json.Unmarshal(s.do(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil).body, &tags); err != nil || len(tags.Tags) != 0 {
		t.Errorf("refused manifests left tags %v (%v)", tags.Tags, err)
	}
	// The same manifest is accepted once its content is there; sha512 by digest too.
	expect(t, "good", s.pushManifest(t, repo, "good", mtManifest, body), http.StatusCreated, "")
	expect(t, "sha512", s.pushManifest(t, repo, digest.SHA512.FromBytes(body).String(), mtManifest, body), http.StatusCreated, "")
	expect(t, "GET sha512", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+digest.SHA512.FromBytes(body).String(), nil), http.StatusOK, "")
}

func TestTagPagination(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	body := s.image(t, repo, "layer")
	want := []string{"a", "b", "c", "d", "e"}
	for _, tag := range want {
		expect(t, tag, s.pushManifest(t, repo, tag, mtManifest, body), http.StatusCreated, "")
	}
	var got []string
	path := "/v2/" + repo + "/tags/list?n=2"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		r := s.do(t, http.MethodGet, path, nil)
		expect(t, path, r, http.StatusOK, "")
		var page struct {
			Name string
			Tags []string
		}
		if err := json.Unmarshal(r.body, &page); err != nil || page.Name != repo || len(page.Tags) > 2 {
			t.Fatalf("%s: %s (%v)", path, r.body, err)
		}
		got = append(got, page.Tags...)
		path = ""
		if link := r.header.Get("Link"); link != "" {
			path = strings.TrimPrefix(strings.Split(link, ">")[0], "<")
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("paged tags %v, want %v", got, want)
	}
	r := s.do(t, http.MethodGet, "/v2/"+repo+"/tags/list?last=b&n=10", nil)
	if !strings.Contains(string(r.body), `"tags":["c","d","e"]`) || r.header.Get("Link") != "" {
		t.Errorf("after b: %s Link %q", r.body, r.header.Get("Link"))
	}
	expect(t, "unknown repository", s.do(t, http.MethodGet, "/v2/team/none/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
}

func TestDeletes(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	body := s.image(t, repo, "layer to delete")
	d := digest.FromBytes(body)
	expect(t, "PUT", s.pushManifest(t, repo, "v1", mtManifest, body), http.StatusCreated, "")
	expect(t, "tag v2", s.pushManifest(t, repo, "v2", mtManifest, body), http.StatusCreated, "")
	var doc oci.Manifest
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	layer := doc.Layers[0].Digest

	expect(t, "DELETE tag", s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/v1", nil), http.StatusAccepted, "")
	expect(t, "GET deleted tag", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expect(t, "GET by digest", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusOK, "")
	expect(t, "DELETE tag again", s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")

	expect(t, "DELETE blob", s.do(t, http.MethodDelete, "/v2/"+repo+"/blobs/"+layer.String(), nil), http.StatusAccepted, "")
	expect(t, "GET deleted blob", s.do(t, http.MethodGet, "/v2/"+repo+"/blobs/"+layer.String(), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	if !s.reg.Referenced(layer) {
		t.Error("a layer of a manifest still in the repository is not referenced")
	}
	expect(t, "DELETE manifest", s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusAccepted, "")
	expect(t, "GET deleted manifest", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expect(t, "its other tag went with it", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v2", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expect(t, "DELETE manifest again", s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+d.String(), nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	expect(t, "DELETE unknown blob", s.do(t, http.MethodDelete, "/v2/"+repo+"/blobs/"+layer.String(), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	expect(t, "DELETE malformed digest", s.do(t, http.MethodDelete, "/v2/"+repo+"/blobs/sha256:xyz", nil), http.StatusBadRequest, "DIGEST_INVALID")
	if s.reg.Referenced(layer) || s.reg.Referenced(d) {
		t.Error("deleted content is still referenced, GC would keep it forever")
	}
	if !s.reg.Referenced(doc.Config.Digest) {
		t.Error("the config blob, still in the repository, is not referenced")
	}
}

func TestDeletesDisabled(t *testing.T) {
	t.Parallel()
	s := newSeed(t, WithDeletes(false))
	body := s.image(t, repo, "layer")
	expect(t, "PUT", s.pushManifest(t, repo, "v1", mtManifest, body), http.StatusCreated, "")
	for _, p := range []string{"/manifests/v1", "/manifests/" + digest.FromBytes(body).String(), "/blobs/" + digest.FromString("layer").String()} {
		expect(t, p, s.do(t, http.MethodDelete, "/v2/"+repo+p, nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
	}
	expect(t, "still there", s.do(t, http.MethodGet, "/v2/"+repo+"/manifests/v1", nil), http.StatusOK, "")
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	s := newSeed(t)
	subjectBody := s.image(t, repo, "the subject")
	expect(t, "subject", s.pushManifest(t, repo, "v1", mtManifest, subjectBody), http.StatusCreated, "")
	subject := desc{MediaType: mtManifest, Digest: digest.FromBytes(subjectBody), Size: int64(len(subjectBody))}
	emptyCfg := desc{MediaType: mtEmpty, Digest: s.pushBlob(t, repo, []byte("{}")), Size: 2}

	var refs []digest.Digest
	for _, at := range []string{"application/vnd.example.sbom", "application/vnd.example.signature", "application/vnd.example.sbom"} {
		layer := []byte("payload of " + at + string(rune('0'+len(refs))))
		ld := s.pushBlob(t, repo, layer)
		b := manifestJSON(t, emptyCfg, []desc{{MediaType: "application/octet-stream", Digest: ld, Size: int64(len(layer))}}, &subject, at)
		r := s.pushManifest(t, repo, digest.FromBytes(b).String(), mtManifest, b)
		expect(t, "referrer", r, http.StatusCreated, "")
		if r.header.Get("OCI-Subject") != subject.Digest.String() {
			t.Errorf("OCI-Subject = %q", r.header.Get("OCI-Subject"))
		}
		refs = append(refs, digest.FromBytes(b))
	}
	// A subject that was never pushed is fine (spec: the referrer may come first).
	ghost := desc{MediaType: mtManifest, Digest: digest.FromString("ghost"), Size: 5}
	b := manifestJSON(t, emptyCfg, nil, &ghost, "application/vnd.example.ghost")
	expect(t, "referrer of a missing subject", s.pushManifest(t, repo, "ghostref", mtManifest, b), http.StatusCreated, "")

	list := func(query string) ([]desc, response) {
		r := s.do(t, http.MethodGet, "/v2/"+repo+"/referrers/"+subject.Digest.String()+query, nil)
		expect(t, "referrers"+query, r, http.StatusOK, "")
		if r.header.Get("Content-Type") != mtIndex {
			t.Errorf("referrers Content-Type %q", r.header.Get("Content-Type"))
		}
		var idx struct {
			MediaType string
			Manifests []desc
		}
		if err := json.Unmarshal(r.body, &idx); err != nil || idx.MediaType != mtIndex {
			t.Fatalf("referrers body %s (%v)", r.body, err)
		}
		return idx.Manifests, r
	}
	all, r := list("")
	if len(all) != 3 || r.header.Get("OCI-Filters-Applied") != "" {
		t.Errorf("referrers: %+v, filters %q", all, r.header.Get("OCI-Filters-Applied"))
	}
	sboms, r := list("?artifactType=application/vnd.example.sbom")
	if len(sboms) != 2 || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("filtered referrers: %+v, filters %q", sboms, r.header.Get("OCI-Filters-Applied"))
	}
	for _, d := range sboms {
		if d.ArtifactType != "application/vnd.example.sbom" || d.MediaType != mtManifest || d.Size == 0 {
			t.Errorf("filtered entry %+v", d)
		}
	}
	none, _ := list("?artifactType=application/vnd.example.none")
	if len(none) != 0 {
		t.Errorf("no referrer has that type, got %+v", none)
	}
	expect(t, "DELETE referrer", s.do(t, http.MethodDelete, "/v2/"+repo+"/manifests/"+refs[1].String(), nil), http.StatusAccepted, "")
	if all, _ := list(""); len(all) != 2 {
		t.Errorf("after deleting one, referrers: %+v", all)
	}
	expect(t, "malformed subject", s.do(t, http.MethodGet, "/v2/"+repo+"/referrers/sha256:abc", nil), http.StatusBadRequest, "DIGEST_INVALID")
}

// TestOnlyHosted: the registry answers for hosted repositories alone (a seed routes the others
// to its agent), and a repository is hosted from its first push.
func TestOnlyHosted(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg, err := New(st)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx := context.Background()
	repo := registryapi.Repository{Name: "library/alpine"}
	if reg.Hosts(repo.Name) {
		t.Fatal("a repository nobody pushed to is hosted")
	}
	if _, err := reg.GetManifest(ctx, repo, "latest", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("manifest of a repository not hosted: %v", err)
	}
	id, err := reg.StartUpload(ctx, repo.Name, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.WriteUpload(ctx, repo.Name, id, 0, strings.NewReader("pushed")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.FinishUpload(ctx, repo.Name, id, digest.FromString("pushed")); err != nil {
		t.Fatal(err)
	}
	if !reg.Hosts(repo.Name) {
		t.Error("a repository pushed to is not hosted")
	}
	if _, err := reg.StatBlob(ctx, repo, digest.FromString("pushed")); err != nil {
		t.Errorf("pushed blob: %v", err)
	}
	if _, err := reg.StatBlob(ctx, registryapi.Repository{Name: "other/repo"}, digest.FromString("pushed")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a pushed blob served for another repository: %v", err)
	}
}

// TestIndexSurvivesRestart: the index lives in hosted.db; a new Registry on the same directory
// serves what was pushed.
func TestIndexSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := func() (*store.Store, *Registry) {
		st, err := store.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := New(st)
		if err != nil {
			t.Fatal(err)
		}
		return st, reg
	}
	ctx := context.Background()
	st, reg := open()
	d := digest.FromString("blob")
	id, _ := reg.StartUpload(ctx, repo, "")
	if _, err := reg.WriteUpload(ctx, repo, id, 0, strings.NewReader("blob")); err != nil {
		t.Fatal(err)
	}
	// An upload left open at the restart must not survive it.
	open2, _ := reg.StartUpload(ctx, repo, "")
	if _, err := reg.WriteUpload(ctx, repo, open2, -1, strings.NewReader("half")); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.FinishUpload(ctx, repo, id, d); err != nil {
		t.Fatal(err)
	}
	body := manifestJSON(t, desc{MediaType: mtConfig, Digest: d, Size: 4}, nil, nil, "")
	if err := reg.PutManifest(ctx, repo, []string{"v1"}, &registryapi.Manifest{MediaType: mtManifest, Digest: digest.FromBytes(body), Body: body}); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	st.Close()

	st, reg = open()
	defer st.Close()
	defer reg.Close()
	if got, _, _, ok := reg.ResolveTag(repo, "v1"); !ok || got != digest.FromBytes(body) {
		t.Errorf("after restart ResolveTag = %s %v", got, ok)
	}
	if !reg.Referenced(d) {
		t.Error("after restart the blob is not referenced")
	}
	if _, err := reg.UploadSize(ctx, repo, open2); err == nil {
		t.Error("an upload survived the restart")
	}
}
