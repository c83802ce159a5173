package tags

import "testing"

// Peers read each other's records by key: every spelling of one registry must give one key, and
// the hosted namespace ("") none of an upstream's.
func TestKeysUseTheCanonicalHost(t *testing.T) {
	accept := []string{"b", "a", "a"}
	want := Key("docker.io", "library/alpine", "3", []string{"a", "b"})
	for _, host := range []string{"docker.io", "index.docker.io", "registry-1.docker.io", "Registry-1.Docker.IO"} {
		if got := Key(host, "library/alpine", "3", accept); got != want {
			t.Errorf("Key(%q) = %q, want %q", host, got, want)
		}
	}
	if Prefix("Registry.Example:5000", "a", "v1") != Prefix("registry.example:5000", "a", "v1") {
		t.Error("the host's case changes the prefix")
	}
	if Prefix("", "library/alpine", "3") == Prefix("docker.io", "library/alpine", "3") {
		t.Error("the hosted namespace shares a prefix with an upstream")
	}
}
