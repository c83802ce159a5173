// Package layers holds the test that fixes Shoal's package layers: which of the module's
// packages each one may import, and what it must never depend on, even indirectly. The layers
// are drawn in docs/architecture.md; change both together.
package layers

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/shoal-oci/shoal/"

// internal is every leaf helper under internal/ (each imports nothing of Shoal's but other
// leaves).
var internal = []string{"internal/*"}

// outside is what a benchmark that runs shoal as processes must not link: the node's parts
// (benchproc makes seed authority keys with p2p/seedauth, a leaf).
var outside = []string{"agent", "agent/*", "seed", "seed/*", "p2p", "p2p/transfer", "registryapi", "registryapi/*"}

// TestLayers checks the module's packages against the table: a package matching a rule may
// import from the module only the packages its rule allows, and may not depend, directly or
// through others, on anything its rule bans (module paths, or outside modules by prefix).
// Packages under test/ and cmd/ sit on top and are constrained only where a rule names them;
// every other package must match a rule, so a new package has to be placed in a layer.
func TestLayers(t *testing.T) {
	rules := []struct {
		name   string
		pkg    string   // the package, or a pattern ending in /*
		allow  []string // module packages it may import directly
		banned []string // what it may not depend on at all
	}{
		{name: "the demo runs everything, like cmd", pkg: "internal/demo",
			allow: []string{"agent", "agent/*", "p2p", "internal/*", "registryapi", "registryapi/origin"}},
		{name: "leaf helpers", pkg: "internal/*", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "registryapi", "registryapi/*",
				"github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "the /v2 server knows no origin, store or peer", pkg: "registryapi",
			allow: internal,
			banned: []string{"registryapi/origin", "agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*",
				"github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "an in-memory backend for tests of the server", pkg: "registryapi/registrytest",
			allow:  append([]string{"registryapi"}, internal...),
			banned: []string{"registryapi/origin", "agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "the origin client stands beside the server", pkg: "registryapi/origin", allow: internal,
			banned: []string{"registryapi", "agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "github.com/libp2p/"}},
		{name: "path-prefix routing sits in front of the server, knowing neither", pkg: "registryapi/hostpath", allow: internal,
			banned: []string{"registryapi", "registryapi/origin", "agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "github.com/libp2p/"}},
		{name: "a node's keys", pkg: "p2p/keys", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "bootstrap addresses", pkg: "p2p/bootaddr", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "libp2p resource limits", pkg: "p2p/limits", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "who may join", pkg: "p2p/admission", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "provider record quotas", pkg: "p2p/providerquota", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "who is a seed", pkg: "p2p/seedauth", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "finding the live seeds", pkg: "p2p/seedfind", allow: append([]string{"p2p/seedauth"}, internal...),
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "TLS with gathered records", pkg: "p2p/tlsrecords", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "peer transport knows no HTTP edge or node", pkg: "p2p", allow: append([]string{"p2p/keys", "p2p/bootaddr", "p2p/limits", "p2p/admission", "p2p/providerquota", "p2p/seedauth", "p2p/seedfind", "p2p/tlsrecords"}, internal...),
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*"}},
		{name: "peer protocol", pkg: "p2p/transfer", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "registryapi", "registryapi/*", "p2p"}},
		{name: "the data directory's names", pkg: "agent/store/layout", allow: internal,
			banned: []string{"agent/store", "agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "tag records and pins beside the content, in the store's database", pkg: "agent/store/records",
			allow:  append([]string{"agent/store/layout"}, internal...),
			banned: []string{"agent/store", "agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "the store is files and bbolt", pkg: "agent/store", allow: append([]string{"agent/store/layout", "agent/store/records"}, internal...),
			banned: []string{"agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "pushes are written into the store", pkg: "agent/store/ingest",
			allow:  append([]string{"agent/store"}, internal...),
			banned: []string{"agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "checking a stopped node's store reads its layout", pkg: "agent/store/verify",
			allow:  append([]string{"agent/store/layout"}, internal...),
			banned: []string{"agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "garbage collection evicts from the store", pkg: "agent/gc",
			allow:  append([]string{"agent/store"}, internal...),
			banned: []string{"agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "what verified manifests list is the node's own record", pkg: "agent/descriptors", allow: internal,
			banned: []string{"agent/store", "agent/fetch", "p2p", "p2p/*", "registryapi", "registryapi/*", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "the pipeline asks sources through interfaces", pkg: "agent/fetch",
			allow:  append([]string{"agent/store", "registryapi/origin"}, internal...),
			banned: []string{"p2p", "p2p/*", "registryapi", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "access to private repositories asks the origin", pkg: "agent/access",
			allow:  append([]string{"registryapi/origin"}, internal...),
			banned: []string{"agent/store", "agent/fetch", "agent/swarm", "agent/resolve", "agent/peerserve", "p2p", "p2p/*", "registryapi", "seed", "seed/*", "github.com/libp2p/"}},
		{name: "the penalty box is a record of peers", pkg: "agent/swarm/penalty", allow: internal,
			banned: []string{"agent/*", "p2p", "p2p/*", "registryapi", "seed", "seed/*"}},
		{name: "metadata from peers is asked through the transfer client", pkg: "agent/swarm/metadata",
			allow:  append([]string{"agent/swarm/penalty", "p2p/transfer"}, internal...),
			banned: []string{"agent/fetch", "agent/store", "agent/resolve", "agent/peerserve", "p2p", "registryapi", "seed", "seed/*"}},
		{name: "the swarm is a source of the pipeline", pkg: "agent/swarm",
			allow:  append([]string{"agent/fetch", "agent/swarm/metadata", "agent/swarm/penalty", "p2p/transfer"}, internal...),
			banned: []string{"agent/resolve", "agent/peerserve", "registryapi", "seed", "seed/*", "p2p"}},
		{name: "resolution asks peers through interfaces", pkg: "agent/resolve",
			allow:  append([]string{"agent/fetch", "agent/store", "registryapi/origin"}, internal...),
			banned: []string{"agent/swarm", "agent/peerserve", "p2p", "p2p/*", "registryapi", "seed", "seed/*"}},
		{name: "the serving side", pkg: "agent/peerserve",
			allow:  append([]string{"agent/access", "agent/fetch", "agent/resolve", "agent/store", "p2p/transfer", "registryapi/origin"}, internal...),
			banned: []string{"agent/swarm", "p2p", "registryapi", "seed", "seed/*"}},
		{name: "pins and preheat", pkg: "agent/pins",
			allow:  append([]string{"agent/fetch", "agent/resolve", "agent/store", "registryapi/origin"}, internal...),
			banned: []string{"agent/swarm", "agent/peerserve", "p2p", "p2p/*", "registryapi", "seed", "seed/*"}},
		{name: "the node wires the parts, and knows no role", pkg: "agent",
			allow:  append([]string{"agent/*", "p2p", "p2p/transfer", "registryapi", "registryapi/hostpath", "registryapi/origin"}, internal...),
			banned: []string{"seed", "seed/*"}},
		{name: "hosted repositories are storage behind the /v2 interfaces", pkg: "seed/hosted",
			allow:  append([]string{"agent/store", "agent/store/ingest", "registryapi"}, internal...),
			banned: []string{"agent", "agent/fetch", "agent/swarm", "agent/resolve", "p2p", "p2p/*", "registryapi/origin", "github.com/libp2p/"}},
		{name: "import and export are plain registry clients", pkg: "seed/archive", allow: internal,
			banned: []string{"agent", "agent/*", "seed/hosted", "p2p", "p2p/*", "registryapi", "registryapi/*",
				"github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "the runtime's mirror files and their check", pkg: "runtimeconf", allow: internal,
			banned: []string{"agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "registryapi", "registryapi/*",
				"github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "containerd's and CRI-O's formats", pkg: "runtimeconf/*", allow: append([]string{"runtimeconf"}, internal...),
			banned: []string{"agent", "agent/*", "seed", "seed/*", "p2p", "p2p/*", "registryapi", "registryapi/*",
				"github.com/libp2p/", "go.etcd.io/bbolt"}},
		{name: "the seed role is built from the agent's public parts", pkg: "seed",
			allow: append([]string{"agent", "agent/*", "p2p", "registryapi", "seed/hosted"}, internal...)},
		// The end-to-end tests' harness runs registries and containerd as processes, as it runs shoal.
		{name: "registries as origins for the end-to-end tests", pkg: "test/testutil/origins", allow: []string{"test/testutil"}, banned: outside},
		{name: "containerd daemons for the end-to-end tests", pkg: "test/testutil/containerd", allow: []string{"test/testutil"}, banned: outside},
		// Benchmarks that measure Shoal from outside, as processes, link to none of it.
		{name: "network namespaces and links for the benchmarks", pkg: "test/bench/internal/benchnetns", banned: outside},
		{name: "containerd as a benchmark's runtime", pkg: "test/bench/internal/benchctr",
			allow: []string{"test/bench/internal/benchnetns", "test/bench/internal/benchruntime"}, banned: outside},
		{name: "a benchmark's cluster over real links", pkg: "test/bench/internal/benchlab",
			allow: []string{"test/bench/internal/benchctr", "test/bench/internal/benchnetns", "test/bench/internal/benchorigin",
				"test/bench/internal/benchproc", "test/bench/internal/benchruntime"}, banned: outside},
	}
	pkgs := goList(t, "-f", "{{.ImportPath}}|{{join .Imports \" \"}}|{{join .Deps \" \"}}", "github.com/shoal-oci/shoal/...")
	for _, p := range pkgs {
		name := strings.TrimPrefix(p.path, module)
		matched := false
		for _, r := range rules {
			if !matches(r.pkg, name) {
				continue
			}
			matched = true
			for _, imp := range p.imports {
				if rel, ok := strings.CutPrefix(imp, module); ok && !matchesAny(r.allow, rel) {
					t.Errorf("%s (%s) imports %s", name, r.name, rel)
				}
			}
			for _, dep := range p.deps {
				rel := strings.TrimPrefix(dep, module)
				for _, b := range r.banned {
					if banned(b, dep, rel) {
						t.Errorf("%s (%s) depends on %s", name, r.name, dep)
					}
				}
			}
			break
		}
		if !matched && !strings.HasPrefix(name, "test/") && !strings.HasPrefix(name, "cmd/") {
			t.Errorf("%s is in no layer: add it to the table (and to docs/architecture.md)", name)
		}
	}
}

type pkg struct {
	path          string
	imports, deps []string
}

func goList(t *testing.T, args ...string) []pkg {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var pkgs []pkg
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 {
			t.Fatalf("go list: unexpected line %q", line)
		}
		pkgs = append(pkgs, pkg{path: f[0], imports: strings.Fields(f[1]), deps: strings.Fields(f[2])})
	}
	sort.Slice(pkgs, func(i, j int) bool { return pkgs[i].path < pkgs[j].path })
	return pkgs
}

// matches reports whether a module-relative package name fits a pattern: itself, or anything
// below dir for "dir/*".
func matches(pattern, name string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/*"); ok {
		return strings.HasPrefix(name, dir+"/")
	}
	return pattern == name
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if matches(p, name) {
			return true
		}
	}
	return false
}

// banned reports whether dep is what b bans: an outside module by path prefix (b's first
// element has a dot), or a module package by pattern (see matches).
func banned(b, dep, rel string) bool {
	if first, _, _ := strings.Cut(b, "/"); strings.Contains(first, ".") {
		return strings.HasPrefix(dep, b)
	}
	return strings.HasPrefix(dep, module) && matches(b, rel)
}
